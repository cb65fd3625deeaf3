"""What every analysis module shares: the result envelope and the compile helpers.

An analysis is a class registered with `@analysis(kind, description, ParamsClass, capabilities...)`
(core/registry.py), with its parameters a frozen dataclass (core/typed.py), and three methods:
  compile(params, ctx) -> Step      (no torch: which hooks, which references; selectors compiled)
  compute(params, run) -> Result    (imports torch lazily, through `run`; reads params' attributes)
  figures(result, run) -> [(name, plotly fig)] (imports plotly lazily)
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..core.plan import Step
from ..core.result import Result  # noqa: F401  (the envelope every analysis returns)
from ..core.typed import AnalysisParams


def step(ctx, params: AnalysisParams, description: str, hooks=(), positions: str = "final",
         depends_on=(), shares_final_pass: bool = False, reads_patterns: bool = False,
         continues_pass: bool = False) -> Step:
    """A plan step with the analysis's compiled parameters: the selectors its `compile` compiled
    through `ctx`, the defaults filled. `shares_final_pass`: the analysis reads its clean
    final-position hooks through `RunContext.capture_final` only, so a pass shared with others
    can serve it. `reads_patterns`: it reads the clean dataset prompts' attention patterns through
    the run's pattern cache, which a shared pass then fills. `continues_pass`: it reruns its
    shared pass's prompts with an intervention at late positions (runtime/pass_kv.py)."""
    compiled = ctx.compiled_params(params)
    return Step(id=compiled.name, kind=compiled.kind, description=description,
                hooks=tuple(hooks), positions=positions, depends_on=tuple(depends_on),
                params=compiled, shares_final_pass=shares_final_pass, reads_patterns=reads_patterns,
                continues_pass=continues_pass)


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_grid_rows(values, name: str) -> List[Dict[str, Any]]:
    """[layer][head] -> table rows."""
    return [{"layer": layer, "head": head, "label": head_label(layer, head), name: float(v)}
            for layer, row in enumerate(values) for head, v in enumerate(row)]


def prompt_columns(run) -> List[Dict[str, Any]]:
    """The first columns of a per-prompt table, one per pair the analysis ran on: its index in the
    final dataset and its clean prompt (a table named `per_prompt` is shown, sortable, in the report)."""
    return [{"pair": index, "prompt": pair.clean.text} for index, pair in zip(run.used_pair_indices(), run.pairs)]


def prompt_hover(result: Result) -> List[str]:
    """Hover texts naming the prompts of a result's `per_prompt` table, in its order."""
    return [f"pair {row['pair']}: {row['prompt']}" for row in result.tables.get("per_prompt", [])]


def ranked_heads(table, rule: str, count: int):
    """The (layer, head) cells a head selector `rule(ID, count)` picks from a [layer][head] table:
    the selectors' own ranking, so a summary names the heads a spec would select."""
    from ..expr.functions import FUNCTIONS

    return FUNCTIONS[rule].implementation(table, count)


def selector_summary(table, result_id: str, count: int = 1, rules=("top", "top_abs")) -> str:
    """E.g. "top(patch_heads, 1): L1H2 0.613; top_abs(patch_heads, 1): L3H0 -0.802"."""
    parts = []
    for rule in rules:
        heads = ranked_heads(table, rule, count)
        named = ", ".join(f"{head_label(l, h)} {table[l][h]:.3f}" for l, h in heads)
        parts.append(f"{rule}({result_id}, {count}): {named}")
    return "; ".join(parts)


def final_norm_convention(run) -> str:
    """How the components are scaled, in words, for the model at hand."""
    centred = "centred and " if run.cfg.normalization_type in ("LN", "LNPre") else ""
    return (f"{centred}divided by the clean run's final-norm scale at the final position (frozen, as "
            "TransformerLens's apply_ln_to_stack), then projected on W_U[answer] - W_U[foil]")


# What the logit lens and the attributions decompose, stated in their results: the spec's
# metric when it is logit_diff (linear), else what `direction: logit_diff` asked for.
DECOMPOSED = ("logit_diff: the answer's logit minus the foil's at the final position (for token sets, "
              "the mean logit of each set)")
