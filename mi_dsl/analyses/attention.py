"""Attention patterns of chosen heads (seed: "Attention Analysis", visualize_attention_patterns).

The heads' query x key patterns on chosen dataset prompts, or on a literal text
(optionally repeated, as the reference notebook's induction-head example): the numbers in the
results, a static heatmap per head and prompt, and one interactive circuitsvis view
that opens offline. On dataset prompts it also keeps the heads' patterns on every final
pair (quantised, within a budget: _attention_browser), so the report can show any prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from ..core.result import pairs_record
from ..core.typed import MISSING, AnalysisParams, SelectorValue, param
from ..errors import RunError, SpecMeaningError
from ._attention import HEADS, capture_patterns, head_names, literal_ids, pattern_figures
from ._attention_browser import browse_data, browser_page
from .base import Result, step
from .registry import analysis


@dataclass(frozen=True, kw_only=True)
class TextParams(AnalysisParams):
    """A literal text instead of dataset prompts (attention, head detection's view)."""

    text: Optional[str] = param(None, "A literal prompt instead of dataset prompts (BOS prepended as "
                                      "model.prepend_bos says).")
    repeat: int = param(1, "Repeat `text` this many times, joined as written (the reference notebook's example_text + "
                           "example_text is repeat: 2); default 1.", minimum=1, maximum=16)


@dataclass(frozen=True, kw_only=True)
class AttentionParams(TextParams):
    heads: SelectorValue = param(MISSING, "Which heads, e.g. top(head_attr, 12), bottom(head_attr, 4) or "
                                          "[L8H2, L10H*].", schema=HEADS)
    prompts: Optional[Tuple[int, ...]] = param(None, "Indices of the dataset's final clean prompts to show "
                                                     "(default [0]).", minItems=1, items={"type": "integer",
                                                                                          "minimum": 0})

    def prompt_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        if self.text is not None:
            return []
        return [(("prompts", i), v) for i, v in enumerate(self.prompts or ())]


@analysis("attention", "Attention patterns (query x key) of chosen heads on chosen prompts or a literal "
                       "text, as heatmaps and an interactive view (the reference notebook's Attention Analysis).",
          AttentionParams, answers="none", metrics="none")
class Attention:
    def compile(self, params: AttentionParams, ctx):
        ctx.heads(params)
        check_text_params(params, ctx)
        if params.text is None and params.prompts is None:
            params = params.replace(prompts=(0,))  # the first final prompt unless told
        source = "a literal text" if params.text is not None else f"dataset prompts {list(params.prompts)}"
        return step(ctx, params, f"attention patterns of the selected heads' layers on {source}",
                    hooks=("blocks.{L}.attn.hook_pattern",), positions="all", reads_patterns=params.text is None)

    def cost(self, params, inputs):
        """At most one forward per prompt shown and, for dataset prompts, one per final pair (the prompt
        browser); prompts an earlier analysis captured come from the run's pattern cache."""
        from ..compile.cost import Cost

        prompts = 1 if params.text is not None else len(params.prompts or (0,))
        browser = 0 if params.text is not None else inputs.pairs
        return Cost(cells=inputs.heads_of(params) * prompts, forward_rows=prompts + browser,
                    tokens_per_row=inputs.width)

    def compute(self, params: AttentionParams, run) -> Result:
        heads = run.select_heads(params)
        prompts = chosen_prompts(params, run)
        patterns = capture_patterns(run, [ids for _, _, ids in prompts], heads)
        names = head_names(heads)
        used = [] if params.text is not None else [run.used_pair_indices()[i] for i in params.prompts]
        data = {"heads": names, "prompts": [], "note": "patterns[head][query][key]; rows sum to 1"}
        rows = []
        for (label, text, ids), pattern in zip(prompts, patterns):
            tokens = run.tokenizer.token_strs(ids)
            data["prompts"].append({"label": label, "text": text, "tokens": tokens, "patterns": pattern.tolist()})
            rows += [{"prompt": label, "head": name, "query": q, "key": k, "query_token": tokens[q],
                      "key_token": tokens[k], "attention": float(pattern[h, q, k])}
                     for h, name in enumerate(names) for q in range(len(ids)) for k in range(q + 1)]
        if params.text is None:
            data["browse"] = browse_data(run, heads, names)
        return Result(data, tables={"attention": rows},
                      summary=f"{len(names)} head(s) ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}) "
                              f"on {len(prompts)} prompt(s)",
                      convention="attention probabilities (hook_pattern) of the clean prompts as the model computes "
                                 "them, BOS included; each query row sums to 1",
                      pairs=pairs_record(used, "" if used else "a literal text"))

    def figures(self, result, run):
        figures = pattern_figures(result.data["prompts"], result.data["heads"], run, "Attention patterns")
        page = browser_page(result.data["browse"], run.spec.analyses[run.analysis_index].get(
            "title", "Attention patterns")) if "browse" in result.data else None
        return figures + ([("all_prompts", page)] if page else [])


def check_text_params(params, ctx) -> None:
    if params.text is not None and getattr(params, "prompts", None) is not None:
        raise SpecMeaningError("give either `prompts` (dataset prompts) or `text` (a literal prompt), not both",
                               ctx.where("text"))
    if ctx.written("repeat") and params.text is None:
        raise SpecMeaningError("`repeat` repeats `text`, which is not given", ctx.where("repeat"),
                               hint="add text: \"...\" or remove repeat")


def chosen_prompts(params, run):
    """[(label, text, ids)]: the literal text (repeated, BOS as the model wants) or dataset prompts."""
    if params.text is not None:
        text = params.text * params.repeat
        return [("text", text, literal_ids(run, text))]
    out = []
    for index in params.prompts:
        if index >= len(run.pairs):
            raise RunError(f"prompt {index} does not exist: the dataset has {len(run.pairs)} prompt pairs after "
                           f"the pipeline (0 to {len(run.pairs) - 1})", run.where("prompts"))
        prompt = run.pairs[index].clean
        out.append((f"prompt {index}", prompt.text, list(prompt.ids)))
    return out
