"""Heatmaps of patching grids."""
from __future__ import annotations

from typing import Any, Dict, List



def grid_figures(name: str, data: Dict[str, Any], title: str):
    """A heatmap of the normalised grid: layer x position, layer x head, or (head) x position."""
    from .._figures import heatmap

    zmid = 0.0 if data["direction"] == "denoising" else 1.0
    axes = data["axes"]
    y_layers = [f"L{l}" for l in data["layers"]]
    grid = data["normalized"]
    note = f" ({data['direction']}; 0 = corrupted, 1 = clean)"
    if axes == ["layer", "position"]:
        return [(name, heatmap(grid, title + note, "Position", "Layer", _column_labels(data), y_layers, zmid))]
    if axes == ["layer", "head"]:
        return [(name, heatmap(grid, title + note, "Head", "Layer", data["heads"], y_layers, zmid))]
    rows, labels = [], []
    for layer, per_layer in zip(data["layers"], grid):
        for head, values in zip(data["heads"], per_layer):
            if any(v is not None for v in values):
                rows.append(values)
                labels.append(f"L{layer}{head}")
    return [(name, heatmap(rows, title + note, "Position", "Head", _column_labels(data), labels, zmid))]


def _column_labels(data) -> List[str]:
    return [c["label"] for c in data["positions"]]
