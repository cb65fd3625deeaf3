"""Head ablation (seed: "Backup Name Mover Heads").

Knock out chosen heads (their z, before W_O) at chosen positions by zero, the dataset
mean or the corrupted prompt's value; compare the metric and every head's direct logit
attribution before and after. Heads whose attribution moves towards the lost effect
are backups; the final LayerNorm scale ratio says how much of that is mere rescaling.
"""
from __future__ import annotations

from ..errors import RunError
from ._attention import by_layer, capture_each, head_names, heads_param
from .base import Result, head_label, step
from ._figures import heatmap, scatter
from .registry import analysis

METHODS = ["zero", "mean", "resample"]


@analysis("ablation", "Ablate chosen heads at chosen positions (zero, dataset mean or resampled from the "
                      "corrupted prompt) and compare the metric and each head's direct logit attribution "
                      "before and after (the seed's Backup Name Mover Heads).",
          params={
              "heads": heads_param("Which heads to ablate, e.g. top(head_attr, 1) or [L9H9]."),
              "positions": {"type": ["string", "integer"],
                            "description": "Where to ablate: a position selector such as `final` (the seed's "
                                           "experiment), -1 or a slot name; default every position."},
              "method": {"type": "string", "enum": METHODS,
                         "description": "`zero` (default, the seed's knock-out), `mean` (the head's mean over "
                                        "the dataset's clean prompts at the same position; needs prompts of "
                                        "one length) or `resample` (the head's value on the paired corrupted "
                                        "prompt)."},
          },
          required=["heads"])
class Ablation:
    def compile(self, params, ctx):
        ctx.heads(params)
        ctx.positions(params, "positions", ctx.slots())
        where = params.get("positions", "every position")
        return step(ctx, params, f"{params.get('method', 'zero')}-ablate the heads' z at {where}; every head's "
                                 "output at the final position with and without",
                    hooks=("blocks.{L}.attn.hook_z", "ln_final.hook_scale",
                           "blocks.{L}.ln1_post.hook_scale?"), positions="all")

    def compute(self, params, run) -> Result:
        run.require_processing("ablation")
        heads = run.select_heads(params)
        method = params.get("method", "zero")
        prompts = [p.clean for p in run.pairs]
        if "positions" in params:
            positions = run.select_positions(params, "positions", prompts)
        else:
            positions = [list(range(len(p.ids))) for p in prompts]
        replace = _replacements(run, heads, method)
        interventions = [(f"blocks.{layer}.attn.hook_z", _ablate(hs, positions, replace[layer]))
                         for layer, hs in by_layer(heads).items()]
        before, after = _sweep(run), _sweep(run, interventions)
        return _result(run, heads, method, params.get("positions"), before, after)

    def figures(self, result, run):
        d = result.data
        n_heads = len(d["dla_before"][0])
        labels = [head_label(l, h) for l in range(len(d["dla_before"])) for h in range(n_heads)]
        original = [v for row in d["dla_before"] for v in row]
        ablated = [v for row in d["dla_after"] for v in row]
        colours = ["#d62728" if label in d["heads"] else "#1f77b4" for label in labels]
        change = [[a - b for a, b in zip(ra, rb)] for ra, rb in zip(d["dla_after"], d["dla_before"])]
        return [
            ("dla_scatter", scatter(ablated, original, labels, "Original vs post-ablation direct logit attribution "
                                    "of heads (ablated heads in red)", "Ablated", "Original", color=colours,
                                    diagonal=True)),
            ("dla_change", heatmap(change, "Change in each head's direct logit attribution (after - before)")),
        ]


def _replacements(run, heads, method: str):
    """Per layer, fn(prompt ids, z) -> the values that replace the selected heads' z [B, S, h, d]."""
    import torch

    layers = by_layer(heads)
    if method == "zero":
        return {layer: (lambda ids, z, n=len(hs): z.new_zeros((*z.shape[:2], n, z.shape[-1])))
                for layer, hs in layers.items()}
    which = "clean" if method == "mean" else "corrupted"
    prompts = [getattr(p, which).ids for p in run.pairs]
    if method == "mean" and len({len(ids) for ids in prompts}) > 1:
        raise RunError("mean ablation averages each position over the prompts, so they need one token length; "
                       "set prompts.equal_lengths: true", run.where("method"))
    if method == "resample" and any(len(p.clean.ids) != len(p.corrupted.ids) for p in run.pairs):
        raise RunError("resample ablation needs each corrupted prompt as long as its clean prompt",
                       run.where("method"))
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    keep = {names[layer]: (lambda a, hs=tuple(hs): a[:, :, list(hs)]) for layer, hs in layers.items()}
    kept = capture_each(run, prompts, keep, names[max(layers)], f"capturing {which} z for {method} ablation")
    out = {}
    for layer in layers:
        per_prompt = [k[names[layer]] for k in kept]  # [S_i, h, d]; prompts may differ in length
        longest = max(v.shape[0] for v in per_prompt)
        values = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, 0, 0, longest - v.shape[0]))
                              for v in per_prompt])  # [N, S, h, d], zeros past a prompt's end (never ablated)
        if method == "mean":
            mean = values.mean(0)
            out[layer] = lambda ids, z, mean=mean: mean.to(z.device, z.dtype).expand(z.shape[0], *mean.shape)
        else:
            out[layer] = lambda ids, z, values=values: values[ids, :z.shape[1]].to(z.device, z.dtype)
    return out


def _ablate(heads, positions, replacement):
    """An intervention on hook_z: the heads' z at each prompt's positions <- replacement."""
    import torch

    n_prompts = len(positions)

    def hook(z, hook, rows):
        ids = torch.arange(n_prompts)[rows].reshape(-1)
        mask = torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
        for b, i in enumerate(ids.tolist()):
            mask[b, positions[i]] = True
        z = z.clone()
        z[:, :, heads] = torch.where(mask[:, :, None, None], replacement(ids, z), z[:, :, heads])
        return z

    return hook


def _sweep(run, interventions=()):
    """One pass over the dataset: per-head DLA [L, H], the metric and the final norm scale per prompt."""
    from ..metrics import compute_metrics
    from ..runtime.unembed import UNEMBED_INPUT
    from .head_attribution import capture_heads, head_dla

    kept = capture_heads(run, interventions=interventions)
    metric = compute_metrics(kept[UNEMBED_INPUT], run.answers().to(run.device), run.foils().to(run.device),
                             [run.metric], run.unembed)[run.metric]
    return {"dla": head_dla(run, kept).float(), "metric": metric.cpu(),
            "scale": kept["ln_final.hook_scale"].reshape(-1).float().cpu()}


def _result(run, heads, method, positions, before, after) -> Result:
    names = head_names(heads)
    flat = [l * run.cfg.n_heads + h for l, h in heads]
    own_change = float((after["dla"].flatten()[flat] - before["dla"].flatten()[flat]).sum())
    m_before, m_after = float(before["metric"].mean()), float(after["metric"].mean())
    naive = m_before + own_change if run.metric == "logit_diff" else None
    ratio = float((before["scale"] / after["scale"]).mean())
    data = {
        "heads": names, "method": method, "positions": positions or "all", "metric": run.metric,
        "metric_before": m_before, "metric_after": m_after,
        "metric_before_per_prompt": before["metric"].tolist(), "metric_after_per_prompt": after["metric"].tolist(),
        "naive_prediction": naive,
        "naive_note": "metric before plus the ablated heads' own change in direct logit attribution "
                      "(what the metric would be if no other head changed); logit_diff only",
        "dla_before": before["dla"].tolist(), "dla_after": after["dla"].tolist(),
        "ln_scale_ratio": ratio,
        "ln_scale_note": "mean over prompts of ln_final.hook_scale at the final position, original / ablated",
        "ln_scale_before": before["scale"].tolist(), "ln_scale_after": after["scale"].tolist(),
    }
    n_heads = run.cfg.n_heads
    rows = [{"layer": l, "head": h, "label": head_label(l, h), "ablated": (l, h) in heads,
             "dla_before": float(before["dla"][l, h]), "dla_after": float(after["dla"][l, h]),
             "change": float(after["dla"][l, h] - before["dla"][l, h])}
            for l in range(run.cfg.n_layers) for h in range(n_heads)]
    naive_text = f" (naive {naive:.3f})" if naive is not None else ""
    summary = (f"{method}-ablating {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}: {run.metric} "
               f"{m_before:.3f} -> {m_after:.3f}{naive_text}; LN scale ratio {ratio:.3f}")
    return Result(data, tables={"ablation": rows}, summary=summary)
