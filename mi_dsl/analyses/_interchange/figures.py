"""Figures of an interchange result: an IIA heatmap per variable and component (layers x positions,
heads @ positions for z), and the DAS training curves (plotly imported lazily)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .._figures import grid_heatmap


def figures(data: Dict[str, Any]) -> List[Tuple[str, Any]]:
    out = []
    split = "test-split " if data["grid_split"] == "test" else ""
    for variable in data["variables"]:
        for component, axes in data["grid_axes"].items():
            grid = data["iia"][variable][component]
            title = (f"IIA of '{variable}' ({data['featurizer']}"
                     f"{', k = ' + str(data['dims']) if data.get('dims') else ''}), {component}, {split}"
                     f"{data['examples']} examples")
            # the report's one grid convention (layer 0 on top, every layer labelled); IIA is a share, 0 to 1
            fig = grid_heatmap(grid, title, row_labels=axes["layers"], column_labels=axes["columns"],
                               column_title="Position", signed=False, colorbar="IIA")
            fig.update_traces(zmin=0.0, zmax=1.0)
            out.append((f"iia_{variable}_{component}", fig))
    if data.get("training"):
        out.append(("training", _curves(data["training"])))
    return out


def _curves(curves: List[Dict[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for curve in curves:
        name = f"{curve['variable']} @ {curve['site']}"
        epochs = list(range(1, len(curve["train_loss"]) + 1))
        fig.add_trace(go.Scatter(x=epochs, y=curve["train_loss"], mode="lines+markers", name=name + " train"))
        fig.add_trace(go.Scatter(x=epochs, y=curve["val_loss"], mode="lines+markers", name=name + " validation",
                                 line={"dash": "dot"}))
    fig.update_layout(title="DAS training: cross-entropy of the label over the candidates", xaxis_title="epoch",
                      yaxis_title="loss", template="plotly_white")
    return fig
