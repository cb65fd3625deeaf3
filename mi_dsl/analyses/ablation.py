"""Head ablation (seed: "Backup Name Mover Heads").

Knock out chosen heads (their z, before W_O) at chosen positions by zero, the dataset
mean or the corrupted prompt's value; compare the metric and every head's direct logit
attribution before and after. Heads whose attribution moves towards the lost effect
are backups. On models with a norm after attention (Gemma), zeroing one head changes its
layer's norm scale, which rescales every sibling head's attribution though its output did
not change: each head's change is split into "rescaled by the norms" (its old output read
with the new scales) and "changed output" (the change of its output, read with the new
scales); the two sum to the change, and backups are read from the second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..compile.alignment import check_ablation
from ..core.typed import MISSING, AnalysisParams, SelectorValue, param
from ..errors import RunError
from ._attention import HEADS, by_layer, capture_each, head_names
from .base import Result, head_label, prompt_columns, prompt_hover, step
from ._figures import distribution, layer_head_heatmap, scatter
from .registry import analysis



@dataclass(frozen=True, kw_only=True)
class AblationParams(AnalysisParams):
    heads: SelectorValue = param(MISSING, "Which heads to ablate, e.g. top(head_attr, 1) or [L9H9].", schema=HEADS)
    positions: SelectorValue = param(None, "Where to ablate: a position selector such as `final` (the reference "
                                           "notebook's experiment), -1 or a slot name; default every position.",
                                     schema={"type": ["string", "integer"]})
    method: Literal["zero", "mean", "resample"] = param(
        "zero", "`zero` (default, the knock-out), `mean` (the head's mean over the dataset's clean prompts at the "
                "same position) or `resample` (the head's value on the paired corrupted prompt at the same "
                "position). Prompts of several lengths: `positions` must name the positions (final, a slot, "
                "slot[-1]), and the same-named position of each prompt is used.")


@analysis("ablation", "Ablate chosen heads at chosen positions (zero, dataset mean or resampled from the "
                      "corrupted prompt) and compare the metric and each head's direct logit attribution "
                      "before and after (the reference notebook's Backup Name Mover Heads).", AblationParams,
          alignment=check_ablation,
          reads_final="each head's direct logit attribution, before and after, reads one answer and one foil "
                      "token's logits there",
          continuation_instead="to measure what knocking out a head does to the continuation, use "
                               "activation_patching with target: z, direction: noising and those heads (the "
                               "corrupted prompt's z patched into the clean run one head at a time: ablation by "
                               "resampling, the metric re-read over every continuation token)")
class Ablation:
    def compile(self, params: AblationParams, ctx):
        ctx.heads(params)
        ctx.positions(params, "positions", ctx.slots())  # absent: every position
        where = params.positions if params.positions is not None else "every position"
        return step(ctx, params, f"{params.method}-ablate the heads' z at {where}; every head's "
                                 "output at the final position with and without",
                    hooks=("blocks.{L}.attn.hook_z", "ln_final.hook_scale",
                           "blocks.{L}.ln1_post.hook_scale?"), positions="all",
                    # its "before" sweep (every head's z at the final position, clean prompts) is what
                    # head attribution captures: one shared pass serves both (compile/fusion.py); its
                    # "after" sweep at chosen positions continues from that pass's keys and values
                    shares_final_pass=True, continues_pass=params.positions is not None)

    def cost(self, params, inputs):
        """The heads' direct attributions before and after (two sweeps of its pairs, the second ablated),
        plus one sweep for the replacement values of mean and resample ablation."""
        from ..compile.cost import Cost

        replacement = 0 if params.method == "zero" else inputs.pairs
        return Cost(cells=inputs.layers * inputs.heads, forward_rows=2 * inputs.pairs + replacement,
                    patched_rows=inputs.pairs, tokens_per_row=inputs.width)

    def compute(self, params: AblationParams, run) -> Result:
        run.require_processing("ablation")
        heads = run.select_heads(params)
        method = params.method
        prompts = [p.clean for p in run.pairs]
        if params.positions is not None:
            positions = run.select_positions(params, "positions", prompts)
        else:
            positions = [list(range(len(p.ids))) for p in prompts]
        replace = _replacements(run, heads, method, params, positions)
        interventions = [(f"blocks.{layer}.attn.hook_z", _ablate(hs, positions, replace[layer]))
                         for layer, hs in by_layer(heads).items()]
        # nothing before a prompt's first ablated position changes: the rerun may start there
        first = [min(at, default=len(p.ids)) for at, p in zip(positions, prompts)] \
            if params.positions is not None else None
        before, after = _sweep(run), _sweep(run, interventions, first)
        written = params.positions.to_json() if params.positions is not None else None
        return _result(run, heads, method, written, before, after)

    def figures(self, result, run):
        d = result.data
        n_heads = len(d["dla_before"][0])
        labels = [head_label(l, h) for l in range(len(d["dla_before"])) for h in range(n_heads)]
        original = [v for row in d["dla_before"] for v in row]
        ablated = [v for row in d["dla_after"] for v in row]
        colours = ["#d62728" if label in d["heads"] else "#1f77b4" for label in labels]
        change = [[a - b for a, b in zip(ra, rb)] for ra, rb in zip(d["dla_after"], d["dla_before"])]
        before, after = d["metric_before_per_prompt"], d["metric_after_per_prompt"]
        texts = prompt_hover(result)
        per_prompt = ("per_prompt", distribution(
            {"before": before, "after": after, "change": [a - b for a, b in zip(after, before)]}, texts,
            f"{d['metric']} of each prompt before and after ablating {', '.join(d['heads'][:6])}", d["metric"],
            reference=0.0))
        return [
            ("dla_scatter", scatter(ablated, original, labels, "Original vs post-ablation direct logit attribution "
                                    "of heads (ablated heads in red)", "Ablated", "Original", color=colours,
                                    diagonal=True)),
            ("dla_change", layer_head_heatmap(change, "Change in each head's direct logit attribution "
                                                 "(after - before)", colorbar="change")),
        ] + ([("dla_changed_output", layer_head_heatmap(d["dla_changed_output"], "Change from each head's changed "
                                                         "output (the change less the norms' rescaling; "
                                                         "backups read here)", colorbar="change"))]
             if "dla_changed_output" in d else []) + [per_prompt]


def _zeros_for(n_heads: int):
    """fn(prompt ids, z, first) -> zeros in place of `n_heads` heads' z [B, S, n_heads, d]."""
    return lambda ids, z, first: z.new_zeros((*z.shape[:2], n_heads, z.shape[-1]))


def _replacements(run, heads, method: str, params, positions):
    """Per layer, fn(prompt ids, z, first) -> the values that replace the selected heads' z [B, S, h, d] of
    positions first.. (a rerun continued after the positions before: runtime/pass_kv.py). Prompts
    of one length: the same index (TransformerLens's convention); of several lengths: the same-named
    position, resolved in each prompt (compile/alignment.py checked that every one has it)."""
    import torch

    from ..compile.alignment import one_length

    layers = by_layer(heads)
    if method == "zero":
        return {layer: _zeros_for(len(hs)) for layer, hs in layers.items()}
    which = "clean" if method == "mean" else "corrupted"
    prompts = [getattr(p, which).ids for p in run.pairs]
    by_name = not one_length(run.pairs)
    if by_name and params.positions is None:
        raise RunError(f"{method} ablation of every position needs prompts of one length; name the positions",
                       run.where("method"))
    sources = run.select_positions(params, "positions", [getattr(p, which) for p in run.pairs]) if by_name else None
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    keep = {names[layer]: (lambda a, hs=tuple(hs): a[:, :, list(hs)]) for layer, hs in layers.items()}
    kept = capture_each(run, prompts, keep, names[max(layers)], f"capturing {which} z for {method} ablation")
    out = {}
    for layer in layers:
        per_prompt = [k[names[layer]] for k in kept]  # [S_i, h, d]; prompts may differ in length
        if by_name:
            values = _by_name(per_prompt, sources, positions, method, run)
            out[layer] = lambda ids, z, first, values=values: _window(values[ids], z, first)
            continue
        longest = max(v.shape[0] for v in per_prompt)
        values = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, 0, 0, longest - v.shape[0]))
                              for v in per_prompt])  # [N, S, h, d], zeros past a prompt's end (never ablated)
        if method == "mean":
            mean = values.mean(0)
            out[layer] = lambda ids, z, first, mean=mean: _window(mean.expand(len(ids), *mean.shape), z, first)
        else:
            out[layer] = lambda ids, z, first, values=values: _window(values[ids], z, first)
    return out


def _window(values, z, first: int):
    """values [B, S, h, d] of positions first .. first + z's positions, on z's device and dtype."""
    return values[:, first:first + z.shape[1]].to(z.device, z.dtype)


def _by_name(per_prompt, sources, positions, method: str, run):
    """[N, S, h, d]: each prompt's ablated positions hold the source's values at the same-named positions
    (resample: its corrupted partner's; mean: the mean over the clean prompts), zeros elsewhere."""
    import torch

    picked = [v[list(src)] for v, src in zip(per_prompt, sources)]  # [k_i, h, d]
    if method == "mean":
        mean = torch.stack(picked).mean(0)  # alignment.py checked one count k for every prompt
        picked = [mean] * len(picked)
    longest = max(len(p.clean.ids) for p in run.pairs)
    values = per_prompt[0].new_zeros((len(picked), longest, *per_prompt[0].shape[1:]))
    for i, (value, at) in enumerate(zip(picked, positions)):
        values[i, list(at)] = value
    return values


def _ablate(heads, positions, replacement):
    """An intervention on hook_z: the heads' z at each prompt's positions <- replacement."""
    import torch

    n_prompts = len(positions)

    def hook(z, hook, rows, first=0):
        """z [B, S, H, d] of positions first.. (0 unless the forward continues after earlier ones)."""
        ids = torch.arange(n_prompts)[rows].reshape(-1)
        mask = torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
        for b, i in enumerate(ids.tolist()):
            if any(q < first for q in positions[i]):  # the rerun started after an ablated position
                raise RunError(f"internal: a forward from position {first} cannot ablate position "
                               f"{min(positions[i])}")
            mask[b, [q - first for q in positions[i]]] = True
        z = z.clone()
        z[:, :, heads] = torch.where(mask[:, :, None, None], replacement(ids, z, first), z[:, :, heads])
        return z

    return hook


def _sweep(run, interventions=(), first=None):
    """One pass over the dataset: per head and prompt the output on the logit-difference direction before
    any norm scale (`raw` [L, H, N]) and the scales dividing it (`inverse` [L, N]: 1 / (post-attention
    scale x final scale)), the post-attention and final scales, and the metric per prompt. `first`: per
    prompt, its earliest intervened position (the positions before it may continue from the shared
    pass's keys and values)."""
    import torch

    from ..metrics import compute_metrics
    from ..runtime.unembed import UNEMBED_INPUT
    from .head_attribution import capture_heads

    kept = capture_heads(run, interventions=interventions, first=first)
    metric = compute_metrics(kept[UNEMBED_INPUT], run.answers().to(run.device), run.foils().to(run.device),
                             [run.main_metric], run.unembed)[run.metric]
    final = kept["ln_final.hook_scale"].reshape(-1).float()
    directions = run.logit_diff_directions()
    raw, post = [], []
    for layer in range(run.cfg.n_layers):
        out = run.head_outputs(kept[f"blocks.{layer}.attn.hook_z"], layer, None)  # [N, H, d]
        if run.has_post_attn_norm():
            out = out * run.post_attn_weight(layer)
            post.append(kept[f"blocks.{layer}.ln1_post.hook_scale"].reshape(-1).float())
        centred = run.apply_final_ln(out.transpose(0, 1), torch.ones_like(final)[:, None].to(out.dtype))
        raw.append((centred * directions).sum(-1).float())  # [H, N]
    post_scales = torch.stack(post) if post else torch.ones(run.cfg.n_layers, len(final), device=final.device)
    inverse = 1.0 / (post_scales * final)
    return {"raw": torch.stack(raw).cpu(), "inverse": inverse.cpu(), "metric": metric.cpu(),
            "scale": final.cpu(), "post_scales": post_scales.cpu() if post else None}


def _dla(sweep):
    """[L, H] mean over prompts of each head's direct logit difference."""
    return (sweep["raw"] * sweep["inverse"][:, None, :]).mean(-1)


def _split(before, after):
    """Each head's change of attribution = rescaled (old output, new scales) + changed output (output
    change, new scales); [L, H] each, means over prompts."""
    rescaled = (before["raw"] * (after["inverse"] - before["inverse"])[:, None, :]).mean(-1)
    changed = ((after["raw"] - before["raw"]) * after["inverse"][:, None, :]).mean(-1)
    return rescaled, changed


def _norm_scales(before, after):
    """Per layer (post-attention norms) and at the end: mean and range of the scale ratio before / after."""
    def ratio(b, a):
        r = b / a
        return {"mean": float(r.mean()), "min": float(r.min()), "max": float(r.max())}

    layers = None
    if before["post_scales"] is not None:
        layers = [ratio(b, a) for b, a in zip(before["post_scales"], after["post_scales"])]
    return layers, ratio(before["scale"], after["scale"])


# A head's changed output below this share of the largest attribution is float32 rounding, not a
# backup: a head the knock-out cannot reach (its own layer's siblings, earlier layers) changes by ~1e-9
# when the rerun sums in another order (a continued forward, another batch size).
BACKUP_FLOOR = 1e-5


def _backups(heads, changed, own_change: float, scale: float, count: int = 5):
    """Heads (not ablated) whose output changed to make up for the lost effect, largest first; a change
    within BACKUP_FLOOR of `scale` (the largest attribution) is none."""
    sign = -1.0 if own_change > 0 else 1.0
    floor = BACKUP_FLOOR * scale
    order = sorted(((sign * float(v), l, h) for (l, h), v in _cells(changed)
                    if (l, h) not in heads and sign * float(v) > floor), reverse=True)
    return [{"head": head_label(l, h), "changed_output": float(changed[l, h])} for _, l, h in order[:count]]


def _cells(table):
    return [((l, h), table[l, h]) for l in range(table.shape[0]) for h in range(table.shape[1])]


def _result(run, heads, method, positions, before, after) -> Result:
    names = head_names(heads)
    dla_before, dla_after = _dla(before), _dla(after)
    rescaled, changed = _split(before, after)
    flat = [l * run.cfg.n_heads + h for l, h in heads]
    own_change = float((dla_after.flatten()[flat] - dla_before.flatten()[flat]).sum())
    m_before, m_after = float(before["metric"].mean()), float(after["metric"].mean())
    naive = m_before + own_change if run.metric == "logit_diff" else None
    layer_ratios, final_ratio = _norm_scales(before, after)
    ratio = final_ratio["mean"]
    scale = max(float(dla_before.abs().max()), float(dla_after.abs().max()))
    backups = _backups(heads, changed, own_change, scale)
    data = {
        "heads": names, "method": method, "positions": positions or "all", "metric": run.metric,
        "metric_before": m_before, "metric_after": m_after,
        "metric_before_per_prompt": before["metric"].tolist(), "metric_after_per_prompt": after["metric"].tolist(),
        "naive_prediction": naive,
        "naive_note": "metric before plus the ablated heads' own change in direct logit attribution "
                      "(what the metric would be if no other head changed); logit_diff only",
        "dla_before": dla_before.tolist(), "dla_after": dla_after.tolist(),
        "dla_rescaled": rescaled.tolist(), "dla_changed_output": changed.tolist(),
        "backup_heads": backups,
        "ln_scale_ratio": ratio,
        "ln_scale_note": "mean over prompts of ln_final.hook_scale at the final position, original / ablated",
        "ln_scale_before": before["scale"].tolist(), "ln_scale_after": after["scale"].tolist(),
        "post_attn_scale_ratio": layer_ratios,
    }
    n_heads = run.cfg.n_heads
    rows = [{"layer": l, "head": h, "label": head_label(l, h), "ablated": (l, h) in heads,
             "dla_before": float(dla_before[l, h]), "dla_after": float(dla_after[l, h]),
             "change": float(dla_after[l, h] - dla_before[l, h]),
             "rescaled_by_norm": float(rescaled[l, h]), "changed_output": float(changed[l, h])}
            for l in range(run.cfg.n_layers) for h in range(n_heads)]
    naive_text = f" (naive {naive:.3f})" if naive is not None else ""
    backup_text = (f"; largest backup (changed output) {backups[0]['head']} {backups[0]['changed_output']:+.4f}"
                   if backups else "")
    summary = (f"{method}-ablating {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}: {run.metric} "
               f"{m_before:.3f} -> {m_after:.3f}{naive_text}; final norm scale ratio {ratio:.3f}"
               + _layer_ratio_text(layer_ratios) + backup_text)
    per_prompt = [{**first, f"{run.metric} before": b, f"{run.metric} after": a, "change": a - b}
                  for first, b, a in zip(prompt_columns(run), data["metric_before_per_prompt"],
                                         data["metric_after_per_prompt"])]
    return Result(data, tables={"ablation": rows, "per_prompt": per_prompt}, summary=summary,
                  convention="metric: exact, re-measured with the heads ablated; direct logit attribution of each "
                             "head before and after, each run read with its own final-norm (and post-attention "
                             "norm) scales at the final position; change = rescaled by the norms (old output, new "
                             "scales) + changed output (new output - old, new scales); backup heads are read from "
                             "the changed output, those that moved against the lost effect by more than 1e-5 of "
                             "the largest attribution (less is float32 rounding)",
                  key_numbers={"metric_before": m_before, "metric_after": m_after, "naive_prediction": naive,
                               "ln_scale_ratio": ratio})


def _layer_ratio_text(layer_ratios) -> str:
    if not layer_ratios:
        return ""
    moved = [(i, r) for i, r in enumerate(layer_ratios) if abs(r["mean"] - 1) > 1e-4]
    if not moved:
        return "; post-attention norm scales unchanged"
    shown = ", ".join(f"L{i} {r['mean']:.3f} ({r['min']:.2f}-{r['max']:.2f})" for i, r in moved[:4])
    return "; post-attention norm scale ratio " + shown + (", ..." if len(moved) > 4 else "")
