"""Layer attribution (seed: "Layer Attribution", decompose_resid).

The final residual stream is the embedding plus each layer's attention and MLP
output; each part's direct contribution to the logit difference.
"""
from __future__ import annotations

from ..core.typed import DecompositionParams
from .base import DECOMPOSED, Result, final_norm_convention, step
from ._figures import line
from .registry import analysis


@analysis("layer_attribution", "Direct logit difference of the embeddings and of each layer's attention "
                               "and MLP output (the seed's Layer Attribution).", DecompositionParams,
          reads_metric="decomposes")
class LayerAttribution:
    def compile(self, params, ctx):
        return step(ctx, params, "embedding + each attention/MLP output at the final position -> logit difference",
                    hooks=("blocks.0.hook_resid_pre", "blocks.{L}.hook_attn_out", "blocks.{L}.hook_mlp_out",
                           "ln_final.hook_scale"), shares_final_pass=True)

    def compute(self, params, run) -> Result:
        import torch

        run.require_processing("layer_attribution")
        names, labels = ["blocks.0.hook_resid_pre"], ["embed"]
        for l in range(run.cfg.n_layers):
            names += [f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out"]
            labels += [f"{l}_attn_out", f"{l}_mlp_out"]
        kept = run.capture_final(names + ["ln_final.hook_scale"])
        values = run.attribute(torch.stack([kept[n] for n in names]), kept["ln_final.hook_scale"]).tolist()
        measured = run.measured(kept)
        bias = float(run.bias_diff().mean())
        total = sum(values) + bias
        return Result(
            {"labels": labels, "logit_diff": values, "sum": total, "measured_logit_diff": measured,
             "unembed_bias_diff": bias, "decomposes": DECOMPOSED},
            tables={"layer_attribution": [{"component": c, "logit_diff": v} for c, v in zip(labels, values)]},
            summary=f"components sum to {total:.4f}; measured {measured:.4f}",
            convention="direct effect of each part (embeddings, each attention and MLP output) at the final "
                       f"position, {final_norm_convention(run)}; the parts plus the unembedding bias sum "
                       "exactly to the measured logit difference; effects through later layers are not counted",
            key_numbers={"sum": total, "measured_logit_diff": measured, "unembed_bias_diff": bias})

    def figures(self, result, run):
        d = result.data
        return [("layer_attribution", line(d["logit_diff"], d["labels"], "Logit difference from each layer",
                                           "logit difference"))]
