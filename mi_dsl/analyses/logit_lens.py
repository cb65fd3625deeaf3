"""Logit lens on the accumulated residual stream (seed: "Logit Lens").

The residual stream entering each layer, and the final one, read through the final
normalisation and the logit-difference direction: where in depth the answer appears.
"""
from __future__ import annotations

from .base import DECOMPOSED, Result, step
from ._figures import line
from .registry import analysis


@analysis("logit_lens", "Logit difference read from the accumulated residual stream before each "
                        "layer and at the end (the seed's Logit Lens).", decomposes=True)
class LogitLens:
    def compile(self, params, ctx):
        return step(ctx, params, "accumulated residual stream at the final position -> logit difference",
                    hooks=("blocks.{L}.hook_resid_pre", "blocks.{last}.hook_resid_post", "ln_final.hook_scale"))

    def compute(self, params, run) -> Result:
        import torch

        run.require_processing("logit_lens")
        n_layers = run.cfg.n_layers
        names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)]
        names += [f"blocks.{n_layers - 1}.hook_resid_post", "ln_final.hook_scale"]
        kept = run.capture_final(names)
        stack = torch.stack([kept[n] for n in names[:-1]])  # [L+1, N, d]
        values = run.attribute(stack, kept["ln_final.hook_scale"]).tolist()
        labels = [f"{l}_pre" for l in range(n_layers)] + ["final_post"]
        measured = run.measured(kept)
        bias = float(run.bias_diff().mean())
        return Result(
            {"labels": labels, "logit_diff": values, "measured_logit_diff": measured, "decomposes": DECOMPOSED,
             "unembed_bias_diff": bias},
            tables={"logit_lens": [{"component": c, "logit_diff": v} for c, v in zip(labels, values)]},
            summary=f"final entry {values[-1]:.4f} (+ unembedding bias {bias:.4f}) vs measured {measured:.4f}")

    def figures(self, result, run):
        d = result.data
        return [("logit_lens", line(d["logit_diff"], d["labels"],
                                    "Logit difference from the accumulated residual stream", "logit difference"))]
