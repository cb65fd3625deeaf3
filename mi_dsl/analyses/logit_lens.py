"""Logit lens on the accumulated residual stream (seed: "Logit Lens").

The residual stream entering each layer, and the final one, read through the final
normalisation and the logit-difference direction: where in depth the answer appears.
`normalize: final` (default, the reference notebook's apply_ln_to_stack) divides every layer by the
final layer's scale, a linear reading in which the entries are comparable sums;
`normalize: per_layer` normalises each layer's residual by its own scale, as if the
final norm were applied there (the usual logit lens), so each entry is a logit
difference the model could read at that depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.typed import DecompositionParams, param
from .base import DECOMPOSED, Result, final_norm_convention, step
from ._figures import line
from .registry import analysis

NORMALIZE = ("final", "per_layer")


@dataclass(frozen=True, kw_only=True)
class LogitLensParams(DecompositionParams):
    normalize: Literal["final", "per_layer"] = param(
        "final", "final (default, the reference notebook's): divide every layer's residual by the final layer's "
                 "norm scale (linear; entries are comparable sums); per_layer: normalise each layer's residual by "
                 "its own scale, as if the final norm were applied there.")


@analysis("logit_lens", "Logit difference read from the accumulated residual stream before each "
                        "layer and at the end (the reference notebook's Logit Lens).", LogitLensParams,
          metrics="linear")
class LogitLens:
    def compile(self, params: LogitLensParams, ctx):
        return step(ctx, params, f"accumulated residual stream at the final position -> logit difference "
                                 f"(normalised by the {params.normalize} scale)",
                    hooks=("blocks.{L}.hook_resid_pre", "blocks.{last}.hook_resid_post", "ln_final.hook_scale"),
                    shares_final_pass=True)

    def cost(self, params, inputs):
        """One forward of its pairs' clean prompts (shared with the other final-position analyses)."""
        from ..compile.cost import Cost

        return Cost(cells=inputs.layers_of(params) + 1, forward_rows=inputs.pairs, tokens_per_row=inputs.width)

    def compute(self, params: LogitLensParams, run) -> Result:
        import torch

        run.require_processing("logit_lens")
        normalize = params.normalize
        n_layers = run.cfg.n_layers
        names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)]
        names += [f"blocks.{n_layers - 1}.hook_resid_post", "ln_final.hook_scale"]
        kept = run.capture_final(names)
        stack = torch.stack([kept[n] for n in names[:-1]])  # [L+1, N, d]
        scale = kept["ln_final.hook_scale"] if normalize == "final" else run.own_final_scale(stack)
        values = run.attribute(stack, scale).tolist()
        labels = [f"{l}_pre" for l in range(n_layers)] + ["final_post"]
        measured = run.measured(kept)
        bias = float(run.bias_diff().mean())
        return Result(
            {"labels": labels, "logit_diff": values, "measured_logit_diff": measured,
             "unembed_bias_diff": bias, "normalize": normalize, "decomposes": DECOMPOSED},
            tables={"logit_lens": [{"component": c, "logit_diff": v} for c, v in zip(labels, values)]},
            summary=f"final entry {values[-1]:.4f} (+ unembedding bias {bias:.4f}) vs measured {measured:.4f}",
            convention=_convention(run, normalize),
            key_numbers={"final_entry": values[-1], "measured_logit_diff": measured, "unembed_bias_diff": bias})

    def figures(self, result, run):
        d = result.data
        return [("logit_lens", line(d["logit_diff"], d["labels"],
                                    "Logit difference from the accumulated residual stream", "logit difference"))]


def _convention(run, normalize: str) -> str:
    if normalize == "final":
        how = final_norm_convention(run) + " for every layer (a linear reading, not each layer's own norm)"
    else:
        how = ("each layer's residual normalised by its own scale (as if the final norm were applied at that "
               "layer), then projected on W_U[answer] - W_U[foil]")
    return (f"logit lens, normalize: {normalize}: the accumulated residual at the final position, {how}; "
            "the last entry plus the unembedding bias is the measured logit difference")
