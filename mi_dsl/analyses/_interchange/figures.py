"""Figures of an interchange result: an IIA heatmap per variable and component (layers x positions,
heads @ positions for z), and the DAS training curves (plotly imported lazily)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .._figures import heatmap


def figures(data: Dict[str, Any]) -> List[Tuple[str, Any]]:
    out = []
    split = "test-split " if data["grid_split"] == "test" else ""
    for variable in data["variables"]:
        for component, axes in data["grid_axes"].items():
            grid = data["iia"][variable][component]
            title = (f"IIA of '{variable}' ({data['featurizer']}"
                     f"{', k = ' + str(data['dims']) if data.get('dims') else ''}), {component}, {split}"
                     f"{data['examples']} examples")
            fig = heatmap(grid, title, x_title="Position", y_title="Layer", x_labels=axes["columns"],
                          y_labels=[f"L{l}" for l in axes["layers"]], zmid=0.5, colorscale="Viridis")
            fig.update_traces(zmin=0.0, zmax=1.0)  # one scale for every IIA map: 0 to 1
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
