"""Attention against direct contribution, per prompt (seed: scatter_attention_and_contribution_logic).

For each selected head and each clean prompt: x is the attention from a query position
to a key position (the seed: from the final token to the descriptor), y is the head's
output at the final position, through the final normalisation, on the answer's
residual direction. A head that copies what it attends to puts its points on a rising line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.typed import MISSING, AnalysisParams, SelectorValue, param
from ..errors import SpecMeaningError
from ._attention import HEADS, by_layer, capture_patterns, head_names
from .base import Result, prompt_columns, prompt_hover, step
from .head_attribution import capture_heads
from ._figures import distribution, scatter
from .registry import analysis

DEFAULT_FROM, DEFAULT_TO = "final", "descriptor"


@dataclass(frozen=True, kw_only=True)
class AttentionVsContributionParams(AnalysisParams):
    heads: SelectorValue = param(MISSING, "Which heads, e.g. [L8H2, L10H10] or top(head_attr, 6).", schema=HEADS)
    from_: SelectorValue = param(DEFAULT_FROM, "Query position selector (default `final`). Several positions: "
                                               "their attention is averaged.", key="from",
                                 schema={"type": ["string", "integer"]})
    to: SelectorValue = param(DEFAULT_TO, "Key position selector (default `descriptor`). A slot of several "
                                          "tokens: the attention to its tokens is summed.",
                              schema={"type": ["string", "integer"]})
    direction: Literal["answer", "logit_diff"] = param(
        "answer", "y is the head's output on the answer's unembedding direction (`answer`, default, as the "
                  "reference notebook) or on answer - foil (`logit_diff`).")


@analysis("attention_vs_contribution",
          "Per prompt and head: attention from one position to another against the head's direct "
          "contribution to the answer at the final position (the reference notebook's "
          "scatter_attention_and_contribution_logic).", AttentionVsContributionParams,
          metrics="none")
class AttentionVsContribution:
    def compile(self, params: AttentionVsContributionParams, ctx):
        ctx.heads(params)
        slots = ctx.slots()
        if not ctx.written("to") and DEFAULT_TO not in slots:
            raise SpecMeaningError(f"`to` defaults to '{DEFAULT_TO}', but the template has no slot '{DEFAULT_TO}'",
                                   ctx.where(), hint=f"set to: to a position selector, e.g. one of {sorted(slots)}")
        written = {"from": params.from_, "to": params.to}
        for field in ("from_", "to"):
            ctx.positions(params, field, slots)
        return step(ctx, params, f"attention {written['from']} -> {written['to']} "
                                 "and each head's output at the final position on the answer direction",
                    hooks=("blocks.{L}.attn.hook_z", "ln_final.hook_scale", "blocks.{L}.ln1_post.hook_scale?"),
                    shares_final_pass=True, reads_patterns=True)  # patterns: the run's pattern cache

    def cost(self, params, inputs):
        """At most one forward of its prompts: the patterns come from the run's pattern cache when an
        attention view captured them (or fill it), the outputs from the shared final-position pass."""
        from ..compile.cost import Cost

        return Cost(cells=inputs.heads_of(params) * inputs.pairs, forward_rows=inputs.pairs,
                    tokens_per_row=inputs.width, own_rows=inputs.pairs,
                    note="patterns: one sweep unless an attention view kept them")

    def compute(self, params: AttentionVsContributionParams, run) -> Result:
        run.require_processing("attention_vs_contribution")
        heads = run.select_heads(params)
        prompts = [p.clean for p in run.pairs]
        queries = run.select_positions(params, "from_", prompts)
        keys = run.select_positions(params, "to", prompts)
        patterns = capture_patterns(run, [p.ids for p in prompts], heads, "capturing attention")
        final = capture_heads(run)  # head attribution's captures: the shared final-position pass serves them
        x = _attention(patterns, queries, keys)
        y = _contribution(run, final, heads, params.direction)
        names = head_names(heads)
        per_head = [{"head": n, "attention": x[:, j].tolist(), "contribution": y[:, j].tolist(),
                     "correlation": _correlation(x[:, j], y[:, j])} for j, n in enumerate(names)]
        data = {"heads": per_head, "from": params.from_.to_json(), "to": params.to.to_json(),
                "direction": params.direction, "prompts": [p.text for p in prompts],
                "from_positions": queries, "to_positions": keys,
                "note": "attention: mean over query positions of the summed attention to the key positions; "
                        "contribution: the head's output at the final position / final-norm scale, on the "
                        "direction"}
        convention = ("x: attention probability from the `from` positions summed over the `to` positions "
                      "(mean over `from`); y: the head's direct output at the final position, scaled as in "
                      "head_attribution (clean final-norm and post-attention scales frozen), on "
                      + ("W_U[answer]" if params.direction == "answer" else "W_U[answer] - W_U[foil]")
                      + ", per prompt")
        rows = [{"head": h["head"], "prompt": i, "text": prompts[i].text, "attention": h["attention"][i],
                 "contribution": h["contribution"][i]} for h in per_head for i in range(len(prompts))]
        summary = "; ".join(f"{h['head']} r={h['correlation']:.2f}" if h["correlation"] is not None
                            else f"{h['head']} r=n/a" for h in per_head[:6])
        per_prompt = [{**first, **{f"{h['head']} {what}": h[what][i] for h in per_head
                                   for what in ("attention", "contribution")}}
                      for i, first in enumerate(prompt_columns(run))]
        return Result(data, tables={"attention_vs_contribution": rows, "per_prompt": per_prompt}, summary=summary,
                      convention=convention, key_numbers={f"r_{h['head']}": h["correlation"] for h in per_head[:6]})

    def figures(self, result, run):
        d = result.data
        what = "answer" if d["direction"] == "answer" else "logit-difference"
        contributions = ("per_prompt", distribution(
            {h["head"]: h["contribution"] for h in d["heads"]}, prompt_hover(result),
            f"Each head's output on the {what} direction, per prompt", f"output on the {what} direction",
            reference=0.0))
        return [(h["head"], scatter(h["attention"], h["contribution"], d["prompts"],
                                    f"How strongly {h['head']} writes the {what} direction relative to its "
                                    f"attention {d['from']} -> {d['to']}",
                                    f"attention {d['from']} -> {d['to']}", f"output on the {what} direction"))
                for h in d["heads"]] + [contributions]


def _attention(patterns, queries, keys):
    """[prompts, heads]: per prompt, mean over query rows of the attention summed over key columns
    (patterns: per prompt [heads, query, key])."""
    import torch

    out = torch.empty(len(patterns), patterns[0].shape[0] if patterns else 0)
    for i, pattern in enumerate(patterns):
        out[i] = pattern[:, queries[i]][:, :, keys[i]].sum(-1).mean(-1)
    return out


def _contribution(run, final, heads, direction: str):
    """[prompts, heads]: each head's final-position output, scaled by the final norm, on the direction."""
    import torch

    answers = run.answers().to(run.device)
    vector = run.unembed.set_directions(answers)  # a token set: its mean direction
    if direction == "logit_diff":
        vector = run.logit_diff_directions()
    scale = final["ln_final.hook_scale"].to(run.device)
    out = torch.empty(len(scale), len(heads))
    for layer, hs in by_layer(heads).items():
        post = final[f"blocks.{layer}.ln1_post.hook_scale"].to(run.device) if run.has_post_attn_norm() else None
        outputs = run.head_outputs(final[f"blocks.{layer}.attn.hook_z"].to(run.device), layer, post)  # [N, H, d]
        for head in hs:
            scaled = run.apply_final_ln(outputs[:, head], scale)
            out[:, heads.index((layer, head))] = (scaled * vector.to(scaled.dtype)).sum(-1).float().cpu()
    return out


def _correlation(x, y):
    import torch

    if len(x) < 2 or float(x.std()) == 0.0 or float(y.std()) == 0.0:
        return None
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])
