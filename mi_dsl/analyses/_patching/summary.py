"""Summaries, result rows and rank correlation of patching grids."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from .engines import Baselines, base_and_source, direction_of
from .grid import Cell, Grid, _grouped, cell_head_label


def summarise(grid: Grid, per_prompt, base: Baselines, params, run, extra: Dict[str, Any]):
    """(Result.data, table rows) of a grid of patched metrics (per cell and prompt)."""
    means = per_prompt.mean(1).tolist()
    values = _empty(grid.shape)
    normalised = _empty(grid.shape)
    labels = _empty(grid.shape)
    rows = []
    for cell, value in zip(grid.cells, means):
        norm = base.normalise(value)
        _put(values, cell.grid_index, value)
        _put(normalised, cell.grid_index, norm)
        _put(labels, cell.grid_index, cell.label)
        rows.append(_row(grid, cell, value, norm, run))
    resting = base.corrupted if base_and_source(direction_of(params))[0] == "corrupted" else base.clean
    order = sorted(range(len(rows)), key=lambda i: -abs(rows[i]["value"] - resting))
    top = [rows[i] for i in order[:params.top_k]]
    target = grid.target
    data = {
        "target": target.name, "hook": target.hook.replace("{layer}", "{L}"), "direction": direction_of(params),
        "metric": run.metric, "axes": list(target.axes),
        "layers": grid.layers,
        "heads": grid.head_labels if target.has_heads else None,
        "positions": [c.to_json() for c in grid.columns] if grid.columns else None,
        "patched_positions": list(grid.patched_positions) if target.has_heads and not target.by_position else None,
        "labels": labels, "values": values, "normalized": normalised,
        "baselines": {"clean": base.clean, "corrupted": base.corrupted},
        "top": top, "top_rule": "largest |value - unpatched baseline|: the effect's size, either sign "
                                "(top() ranks the normalised per-head scores signed, top_abs() by size)",
        "cells": len(grid.cells), "prompts": int(per_prompt.shape[1]),
        "alignment": ("index for index, positions named in the clean prompts" if grid.alignment == "index" else
                      "by name: each named position of the source prompt patched into the same-named "
                      "position of the base prompt (clean and corrupted prompts differ in length)"),
    }
    if grid.named is not None:  # prompts of several lengths: every pair's own positions, not the first's
        named = grid.named
        if data["patched_positions"] is not None:
            data["patched_positions"] = [list(u) for u in named.union]
        data["aligned_positions"] = [  # per pair, per position column: base run positions <- source positions
            [{"base": list(named.positions[c][p]), "source": [named.source_of[p][q] for q in named.positions[c][p]]}
             for c in range(len(named.columns))] for p in range(len(named.union))]
    shown = order[:min(params.top_k, PER_PROMPT_CELLS)]
    data["top_per_prompt"] = {
        "cells": [rows[i]["label"] for i in shown],
        "normalized": [[base.normalise(v) for v in per_prompt[i].tolist()] for i in shown],
        "note": "the largest cells' metric on each prompt, normalised by these pairs' mean baselines as the grid is"}
    complete = (target.has_heads and not target.by_position and not _grouped(run.cfg, target)
                and len(grid.cells) == run.cfg.n_layers * run.cfg.n_heads)
    if complete:  # a full [layer][head] table: top(ID, n) can rank by it
        data["per_head"] = normalised
    data.update(extra)
    return data, rows


PER_PROMPT_CELLS = 8  # the largest cells whose per-prompt values a result keeps


def per_prompt_rows(data: Dict[str, Any], run) -> List[Dict[str, Any]]:
    """The `per_prompt` table: each prompt's normalised metric for the largest cells."""
    from ..base import prompt_columns

    top = data["top_per_prompt"]
    first = prompt_columns(run)
    if any(len(values) != len(first) for values in top["normalized"]):
        raise ValueError("patching: per-prompt values and the analysis's pairs differ in number")
    return [{**row, **{cell: values[j] for cell, values in zip(top["cells"], top["normalized"])}}
            for j, row in enumerate(first)]


def key_numbers(data) -> dict:
    """A patching result's headline numbers: its baselines and its largest effect."""
    top = data["top"][0] if data["top"] else {}
    return {"clean_baseline": data["baselines"]["clean"], "corrupted_baseline": data["baselines"]["corrupted"],
            "largest_effect": top.get("value"), "largest_effect_normalized": top.get("normalized")}


def patching_convention(run, params, n_prompts: int) -> str:
    """Exact patching's convention: where the metric is read, over which prompts, how it is normalised."""
    read = read_at(run.main_metric) + (CONTINUATION_DETAIL if run.main_metric.reads_continuation else "")
    return (f"exact: the metric ({run.metric}) of each patched run {read}, mean over {n_prompts} prompts, "
            f"normalised (m - corrupted) / (clean - corrupted) by these pairs' baselines; {direction_of(params)}")


CONTINUATION_DETAIL = (" (patches at prompt positions only; answer and foil continuations each their own "
                       "patched forward)")


def read_at(metric) -> str:
    """Where a patched run's metric (compiled, metrics.Metric) is read: the plan's description and the
    result's convention."""
    if metric.reads_continuation:
        return "teacher-forced over each continuation after the prompt"
    return "at the final position"


def ranking_summary(data, params) -> str:
    """The heads top() and top_abs() would select from this result (its `per_head` table of
    normalised scores), or, for grids selectors cannot rank, the largest effect by size."""
    from ..base import selector_summary

    if data.get("per_head") is not None and not any(v is None for row in data["per_head"] for v in row):
        return "; " + selector_summary(data["per_head"], params.name)
    best = data["top"][0] if data["top"] else None
    if best is None or best["normalized"] is None:
        return ""
    return f"; largest |effect| (either sign) {best['label']}: {best['normalized']:.3f}"


def _row(grid: Grid, cell: Cell, value: float, norm: Optional[float], run) -> Dict[str, Any]:
    target = grid.target
    row: Dict[str, Any] = {"label": cell.label, "layer": cell.layer}
    if target.has_heads:
        row["head"] = cell_head_label(target, run.cfg, cell.layer, cell.head)
    if target.by_position:
        column = grid.columns[cell.grid_index[-1]]
        row["position"] = column.label
        row["slot"] = column.slot
    row["positions"] = " ".join(map(str, cell.positions))
    row["value"] = value
    row["normalized"] = norm
    return row


def cell_key(row: Dict[str, Any]) -> Tuple:
    return (row["layer"], row.get("head"), row["positions"])


def _empty(shape):
    if len(shape) == 1:
        return [None] * shape[0]
    return [_empty(shape[1:]) for _ in range(shape[0])]


def _put(grid, index, value) -> None:
    for i in index[:-1]:
        grid = grid[i]
    grid[index[-1]] = value


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties) of two 1-D tensors."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def _ranks(x):
    import torch

    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(x))
    return (sums / counts)[inverse]
