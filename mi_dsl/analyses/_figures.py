"""Figure helpers shared by analyses (plotly imported lazily, when a report is drawn)."""
from __future__ import annotations

from typing import List, Sequence


def line(y: Sequence[float], labels: Sequence[str], title: str, ytitle: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(range(len(y))), y=list(y), mode="lines+markers", text=list(labels),
                               hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="component", yaxis_title=ytitle, template="plotly_white")
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(y))), ticktext=list(labels))
    return fig


def heatmap(values: List[List[float]], title: str, x_title: str = "Head", y_title: str = "Layer",
            x_labels=None, y_labels=None, zmid: float = 0.0, colorscale: str = "RdBu"):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=values, x=x_labels, y=y_labels, zmid=zmid, colorscale=colorscale,
                               hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.4f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white")
    fig.update_yaxes(autorange="reversed")
    return fig


def hbar(values: Sequence[float], labels: Sequence[str], title: str, xtitle: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(values), y=list(labels), orientation="h"))
    fig.update_layout(title=title, xaxis_title=xtitle, template="plotly_white",
                      yaxis={"autorange": "reversed"})
    return fig


def scatter(x, y, text, title: str, xtitle: str, ytitle: str, color=None, diagonal: bool = False):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(x), y=list(y), mode="markers", text=list(text),
                               marker={"color": color} if color is not None else None,
                               hovertemplate="%{text}<br>x %{x:.4f}<br>y %{y:.4f}<extra></extra>"))
    if diagonal:
        lo, hi = min(min(x), min(y)), max(max(x), max(y))
        fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line={"dash": "dot", "color": "grey"})
    fig.update_layout(title=title, xaxis_title=xtitle, yaxis_title=ytitle, template="plotly_white")
    return fig
