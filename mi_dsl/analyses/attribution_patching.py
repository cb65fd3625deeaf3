"""Attribution patching: the gradient (first-order) estimate of activation patching.

For each cell, effect ~ (source activation - base activation) . d metric / d activation,
summed over the cell's slice; one forward and one backward of the base prompts per
batch stand in for a forward per cell. Exact where the metric is linear in the patched
activation; elsewhere a fast screen, so it is reported beside an exact activation
patching of the same target when the spec has one (Spearman rank correlation).

With a continuation metric (answers written continuation(...)) what is linearised is the
teacher-forced log-probability summed over the continuation's tokens (for the difference:
the answer's forward minus the foil's, two token sequences after the prompt, whose gradients
at a prompt position add up). Cells patch prompt positions only, as exact patching does.

Positions before the first where some base prompt differs from its source prompt add 0 to every
cell (the two runs hold the same activations there), so where the engine can it runs positions
from there on only (_patching/attribution.py; the summary says so).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..compile.alignment import position_map
from ..compile.memory import graph_row_bytes
from ..core.result import pairs_record
from ..core.typed import param
from ..errors import SpecMeaningError
from ..suggest import unknown
from . import _patching as core
from .base import Result, prompt_hover
from ._figures import scatter
from .registry import analysis, linearised_note

CONVENTION = ("first-order (gradient) estimate of activation patching: (source - base activation) . "
              "d metric / d activation at the base run, per prompt, averaged; exact only where the metric is "
              "linear in the patched activation. Normalised 0 = corrupted, 1 = clean baseline.")
CONTINUATION_CONVENTION = (
    " Continuation metric: what is linearised is the teacher-forced log-probability summed over the "
    "continuation's tokens (log P(c_i | prompt, c_<i), one forward of the prompt followed by the continuation); "
    "for the difference, the answer's forward minus the foil's, their gradients at each prompt position "
    "added. Only prompt positions are patched; a sum of log-softmaxes is not linear, so this is a first-order "
    "estimate (compare it with exact activation_patching).")



@dataclass(frozen=True, kw_only=True)
class AttributionPatchingParams(core.PatchingParams):
    batch_size: Optional[int] = param(None, "Prompts per forward and backward pass (default: the run's batch size, "
                                            "or what fits the memory budget).", minimum=1)
    compare_with: Optional[str] = param(
        None, "The id of an earlier activation_patching of the same target to compare with (Spearman rank "
              "correlation over the cells both patched). Default: the last earlier one with the same target and "
              "direction, if any.", pattern="^[A-Za-z_][A-Za-z0-9_]*$")


@analysis("attribution_patching",
          "Attribution patching: the gradient estimate of activation patching, (source - base activation) "
          ". d metric / d activation, from one forward and one backward per batch; compared with exact "
          "patching of the same target when the spec has it.", AttributionPatchingParams,
          needs_pairs=True, metrics="gradient", answers="any", alignment=position_map,
          graph_bytes_per_row=graph_row_bytes, per_head=True)

class AttributionPatching:
    def compile(self, params: AttributionPatchingParams, ctx):
        # the metric is one this estimate can linearise: checked by the compiler (metrics="gradient")
        if params.compare_with is not None:
            _check_comparison(params, ctx)
        direction = params.direction
        target = core.TARGETS[params.target]
        compiled = core.compile_patching(params, ctx, f"{direction}: gradient estimate for {target.what}; one "
                                                      "forward and backward per batch")
        # The embedding output is the backward pass's leaf (where the model has that hook). Skipping the
        # positions before the first difference reads keys and values from whole forwards to the
        # unembedding's input, which every forward of it reads anyway (_patching/partners.py).
        return replace(compiled, hooks=compiled.hooks + ("hook_embed?",))

    def cost(self, params, inputs):
        """Forwards of both runs and one backward per pair (per side a continuation metric reads)."""
        from ._patching.targets import patching_cost

        return patching_cost(params, inputs, exact=False)

    def compute(self, params: AttributionPatchingParams, run) -> Result:
        grid = core.resolve(params, run)
        direction = core.direction_of(params)
        base = core.baselines(run)
        (effects, passes), seconds = core.timed(
            lambda: core.attribution_patching(run, grid, params.batch_size))
        data, rows = core.summarise(grid, effects + _start(base, direction), base, params, run, {
            "method": "attribution", "passes": passes, "seconds": round(seconds, 3)})
        metric = run.main_metric
        convention = CONVENTION + (CONTINUATION_CONVENTION if metric.reads_continuation else linearised_note(metric))
        key_numbers = core.key_numbers(data)
        other = _comparison_id(params, run)
        if other is not None:
            data["comparison"] = _compare_on_their_pairs(params, run, grid, effects, other)
        summary = f"{len(grid.cells)} cells from one forward and backward per batch ({seconds:.1f}s)"
        if passes["kv_reuse"]:
            summary += (f"; positions {passes['first_position']}.. only (before them every base prompt is its "
                        "source prompt's tokens)")
        if "comparison" in data and data["comparison"]["spearman"] is not None:
            c = data["comparison"]
            summary += f"; Spearman vs {other} on the same {c['pairs']['count']} pairs: {c['spearman']:.3f}"
            key_numbers["spearman_vs_exact"] = c["spearman"]
        return Result(data, tables={"cells": rows, "per_prompt": core.per_prompt_rows(data, run)}, summary=summary,
                      convention=convention, key_numbers=key_numbers)

    def figures(self, result, run):
        d = result.data
        figs = core.grid_figures("attribution_patching", d, f"Attribution patching of {d['target']}",
                                 prompt_hover(result))
        c = d.get("comparison")
        if c and c["spearman"] is not None:
            figs.append(("attribution_vs_exact", scatter(
                c["exact"], c["attribution"], c["labels"],
                f"Attribution vs exact patching ({c['with']}); Spearman {c['spearman']:.3f}",
                "exact (normalised)", "attribution (normalised)", diagonal=True)))
        return figs


def _check_comparison(params: AttributionPatchingParams, ctx) -> None:
    other = params.compare_with
    if other not in ctx.ids:
        raise SpecMeaningError(unknown("analysis", other, ctx.ids), ctx.where("compare_with"))
    if ctx.ids[other] >= len(ctx.spec.analyses):
        ctx.references.append((other, ctx.where("compare_with")))
        return  # a result computed outside the spec (the Python API): compared at run time
    spec_of = ctx.spec.analyses[ctx.ids[other]]
    if spec_of["kind"] != "activation_patching":
        raise SpecMeaningError(f"compare_with names '{other}', a {spec_of['kind']}; it must name an "
                               "activation_patching", ctx.where("compare_with"))
    exact = ctx.params_of(ctx.ids[other])
    mine, theirs = params.target, exact.target
    if mine != theirs:
        raise SpecMeaningError(f"compare_with names '{other}', which patches {theirs}, not {mine}",
                               ctx.where("compare_with"))
    mine, theirs = params.direction, exact.direction
    if mine != theirs:
        raise SpecMeaningError(f"compare_with names '{other}', which runs {theirs}, not {mine}: the two "
                               "measure different effects", ctx.where("compare_with"),
                               hint=f"set direction: {theirs} here, or compare with a {mine} activation_patching")
    ctx.references.append((other, ctx.where("compare_with")))


def _comparison_id(params, run):
    """compare_with, or the last earlier exact patching of the same target and direction."""
    if params.compare_with is not None:
        return params.compare_with
    target, direction = params.target, core.direction_of(params)
    earlier = [name for name, result in run.results.items()
               if result.data.get("method") == "exact" and result.data.get("target") == target
               and result.data.get("direction") == direction]
    return earlier[-1] if earlier else None


def _start(base, direction: str) -> float:
    """The metric of the unpatched base run: where every estimate starts."""
    return base.corrupted if direction == "denoising" else base.clean


def _compare_on_their_pairs(params, run, grid, effects, other: str):
    """Attribution vs exact on the exact run's pairs: the per-prompt estimates of those pairs only,
    normalised by their baselines. Refused when the exact run used a pair this one did not."""
    from ..errors import RunError

    exact = run.results[other]
    where = run.where("compare_with") if params.compare_with is not None else run.where("kind")
    for key, mine in (("target", params.target), ("direction", core.direction_of(params))):
        if exact.data.get(key) != mine:
            raise RunError(f"'{other}' has {key} {exact.data.get(key)}, this one {mine}: not comparable", where)
    theirs = (exact.pairs or {}).get("indices")
    mine = run.used_pair_indices()
    if theirs is None:
        theirs = mine[:exact.data["prompts"]] if exact.data.get("prompts") == len(mine) else None
    column = {pair: i for i, pair in enumerate(mine)}
    missing = [] if theirs is None else [p for p in theirs if p not in column]
    if theirs is None:  # a result made outside a run (no pair envelope) on another number of pairs
        raise RunError(f"'{other}' does not record which pairs it patched ({exact.data.get('prompts')} prompts, "
                       f"this attribution {len(mine)}), so the two cannot be compared on the same prompts", where,
                       hint="run both in one spec, or give them the same pairs")
    if missing:
        raise RunError(f"'{other}' patched pairs this attribution did not run on ({len(missing)} of "
                       f"them), so the two cannot be compared on the same prompts", where,
                       hint="give this analysis at least the exact run's max_pairs (or none)")
    chosen = [column[p] for p in theirs]
    base = core.Baselines(exact.data["baselines"]["clean"], exact.data["baselines"]["corrupted"])
    subset = effects[:, chosen] + _start(base, core.direction_of(params))
    _, rows = core.summarise(grid, subset, base, params, run, {})
    out = compare(rows, exact.tables["cells"], other)
    out["pairs"] = pairs_record(list(theirs))
    return out


def compare(rows, exact_rows, other: str):
    """Attribution vs exact over the cells both patched: Spearman, Pearson, largest gap."""
    import torch

    exact = {core.cell_key(r): r for r in exact_rows}
    shared = [(r, exact[core.cell_key(r)]) for r in rows if core.cell_key(r) in exact]
    shared = [(a, e) for a, e in shared if a["normalized"] is not None and e["normalized"] is not None]
    out = {"with": other, "cells": len(shared), "spearman": None, "pearson": None, "max_abs_difference": None,
           "labels": [a["label"] for a, _ in shared], "attribution": [a["normalized"] for a, _ in shared],
           "exact": [e["normalized"] for _, e in shared]}
    if len(shared) >= 2:
        x, y = torch.tensor(out["attribution"]), torch.tensor(out["exact"])
        out["spearman"] = core.spearman(x, y)
        out["pearson"] = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
        out["max_abs_difference"] = float((x - y).abs().max())
    return out
