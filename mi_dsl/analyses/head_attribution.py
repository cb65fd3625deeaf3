"""Head attribution (seed: "Head Attribution"): each head's direct logit difference.

Every head's output at the final position, through the final normalisation, on the
logit-difference direction; a [layer, head] table, its heatmap and the reference notebook's top-k
bar chart (plot_attention_heads, as a fraction of the clean logit difference).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.typed import DecompositionParams, param
from .base import (DECOMPOSED, Result, final_norm_convention, head_grid_rows, head_label, prompt_columns,
                   prompt_hover, ranked_heads, step)
from ._figures import distribution, hbar, layer_head_heatmap
from .registry import analysis

PER_PROMPT_HEADS = 8  # the heads, largest |direct logit difference| first, whose per-prompt values are kept


@dataclass(frozen=True, kw_only=True)
class HeadAttributionParams(DecompositionParams):
    top_k: int = param(12, "Heads in the bar chart of largest contributions (default 12).", minimum=1)
    normalize: bool = param(True, "Bar chart as a fraction of the clean logit difference (default true, as "
                                  "the reference notebook's plot).")


@analysis("head_attribution", "Direct logit attribution of every attention head at the final position "
                              "(the reference notebook's Head Attribution), with a top-k bar chart.",
          HeadAttributionParams, metrics="linear", per_head=True)
class HeadAttribution:
    def compile(self, params: HeadAttributionParams, ctx):
        return step(ctx, params, "every head's output (z @ W_O) at the final position -> logit difference",
                    hooks=("blocks.{L}.attn.hook_z", "ln_final.hook_scale",
                           "blocks.{L}.ln1_post.hook_scale?"), shares_final_pass=True)

    def cost(self, params, inputs):
        """One forward of its pairs' clean prompts (shared with the other final-position analyses)."""
        from ..compile.cost import Cost

        return Cost(cells=inputs.layers * inputs.heads, forward_rows=inputs.pairs, tokens_per_row=inputs.width)

    def compute(self, params: HeadAttributionParams, run) -> Result:
        run.require_processing("head_attribution")
        each = head_dla(run, capture_heads(run), per_prompt=True)  # [layer, head, prompt]
        values = each.mean(-1)  # as RunContext.attribute averages: the same numbers
        table = values.tolist()
        flat = values.flatten()
        # ranked as the top() selector ranks (signed, largest first), so the chart shows what top() picks
        top = [{"head": head_label(l, h), "logit_diff": table[l][h]}
               for l, h in ranked_heads(table, "top", params.top_k)]
        total = float(flat.sum())
        shown = ranked_heads(table, "top_abs", PER_PROMPT_HEADS)
        per_prompt = [{**first, **{head_label(l, h): float(each[l, h, i]) for l, h in shown}}
                      for i, first in enumerate(prompt_columns(run))]
        return Result({"per_head": table, "top": top, "total": total, "normalize": params.normalize,
                       "decomposes": DECOMPOSED},
                      tables={"head_attribution": head_grid_rows(table, "logit_diff"), "per_prompt": per_prompt},
                      summary=f"top({params.name}): "
                              + ", ".join(f"{t['head']} {t['logit_diff']:.3f}" for t in top[:5]),
                      convention=head_convention(run),
                      key_numbers={"total": total, "top_head_logit_diff": top[0]["logit_diff"] if top else None})

    def figures(self, result, run):
        d = result.data
        clean = run.baselines.get("clean") or 1.0
        scale = 1.0 / clean if d["normalize"] else 1.0
        top = d["top"]
        rows = result.tables.get("per_prompt") or []
        heads = [k for k in (rows[0] if rows else {}) if k not in ("pair", "prompt")]
        per_prompt = [("per_prompt", distribution({h: [r[h] for r in rows] for h in heads}, prompt_hover(result),
                                                  f"The {len(heads)} largest heads' direct logit difference on each "
                                                  "prompt", "logit diff", reference=0.0))] if heads else []
        return [
            ("head_attribution", layer_head_heatmap(d["per_head"], "Direct logit difference from each head",
                                                   colorbar="logit diff")),
            ("head_attribution_top", hbar([t["logit_diff"] * scale for t in top], [t["head"] for t in top],
                                          f"Top {len(top)} heads by direct logit difference (fraction of clean)",
                                          "Logit diff / clean logit diff")),
        ] + per_prompt


def head_convention(run) -> str:
    post = ("; first each head's share of the layer's post-attention norm, with the clean run's norm scale "
            "frozen (each head's value is then a linearisation; heads still sum exactly to the layer)"
            if run.has_post_attn_norm() else "")
    return (f"direct logit attribution: each head's output z @ W_O at the final position, "
            f"{final_norm_convention(run)}{post}. Heads sum to the attention layers' direct effect, not to the "
            "logit difference (embeddings, MLPs, attention biases and the unembedding bias make the rest)")


def per_head_logit_diffs(run, which: str = "clean", interventions=()):
    """[n_layers, n_heads] mean direct logit difference of each head at the final position."""
    return head_dla(run, capture_heads(run, which, interventions))


def capture_heads(run, which: str = "clean", interventions=(), first=None):
    """One pass over the dataset: every head's z at the final position, the post-attention
    and final norm scales, and the unembedding's input (for the measured metric)."""
    n_layers = run.cfg.n_layers
    names = [f"blocks.{l}.attn.hook_z" for l in range(n_layers)]
    if run.has_post_attn_norm():
        names += [f"blocks.{l}.ln1_post.hook_scale" for l in range(n_layers)]
    return run.capture_final(names + ["ln_final.hook_scale"], which, interventions=interventions, first=first)


def head_dla(run, kept, per_prompt: bool = False):
    """[n_layers, n_heads] direct logit difference from what `capture_heads` kept ([.., prompt]
    with `per_prompt`)."""
    import torch

    post = run.has_post_attn_norm()
    outputs = torch.stack([run.head_outputs(kept[f"blocks.{l}.attn.hook_z"], l,
                                            kept[f"blocks.{l}.ln1_post.hook_scale"] if post else None)
                           for l in range(run.cfg.n_layers)])  # [L, N, H, d]
    return run.attribute(outputs.permute(0, 2, 1, 3), kept["ln_final.hook_scale"], per_prompt).cpu()
