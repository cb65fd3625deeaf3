"""Heatmaps of patching grids, in the one grid convention of analyses/_figures.py: layers on y
(layer 0 on top, every layer labelled), heads or positions on x; white is the unpatched run
(0 denoising, 1 noising), blue moves the metric towards the clean run's, red away from it."""
from __future__ import annotations

from typing import Any, Dict, List, Optional


def grid_figures(name: str, data: Dict[str, Any], title: str, hover: Optional[List[str]] = None):
    """A heatmap of the normalised grid (layer x position, layer x head, or (head) x position), and
    the largest cells on each prompt (`hover` names the prompts)."""
    return _grid(name, data, title) + _per_prompt(name, data, hover)


def _per_prompt(name: str, data: Dict[str, Any], hover: Optional[List[str]]):
    """The largest cells' values on each prompt: which prompts carry the effect."""
    from .._figures import distribution

    top = data.get("top_per_prompt")
    if not top or not top["cells"]:
        return []
    neutral = 0.0 if data["direction"] == "denoising" else 1.0
    hover = hover or [f"prompt {i}" for i in range(len(top["normalized"][0]))]
    return [(f"{name}_per_prompt", distribution(
        dict(zip(top["cells"], top["normalized"])), hover,
        f"The {len(top['cells'])} largest cells on each prompt ({data['direction']}; 0 = corrupted, 1 = clean)",
        "normalised metric", reference=neutral))]


def _grid(name: str, data: Dict[str, Any], title: str):
    from .._figures import grid_heatmap

    neutral = 0.0 if data["direction"] == "denoising" else 1.0
    axes = data["axes"]
    grid = data["normalized"]
    note = f" ({data['direction']}; 0 = corrupted, 1 = clean)"
    style = {"neutral": neutral, "colorbar": "normalised metric"}
    if axes == ["layer", "position"]:
        return [(name, grid_heatmap(grid, title + note, row_labels=data["layers"], column_labels=_column_labels(data),
                                    column_title="Position", **style))]
    if axes == ["layer", "head"]:
        kv = all(label.startswith("KV") for label in data["heads"])  # grouped-query k/v: one per KV head
        return [(name, grid_heatmap(grid, title + note, row_labels=data["layers"], column_labels=_heads(data),
                                    column_title="KV head" if kv else "Head", **style))]
    rows, labels = [], []
    for layer, per_layer in zip(data["layers"], grid):
        for head, values in zip(data["heads"], per_layer):
            if any(v is not None for v in values):
                rows.append(values)
                labels.append(f"L{layer}{head}")
    return [(name, grid_heatmap(rows, title + note, row_labels=labels, column_labels=_column_labels(data),
                                row_title="Head", column_title="Position", **style))]


def _heads(data) -> List[str]:
    """The grid's head labels ('H2', 'KV0') as the convention's integers."""
    return [label.lstrip("KVH") for label in data["heads"]]


def _column_labels(data) -> List[str]:
    return [c["label"] for c in data["positions"]]
