"""Figure helpers shared by the analyses and the sweep report (plotly imported lazily).

One convention for every grid with layers on one axis (layer x head, layer x position,
head x position), written here once and used by the run and the sweep reports:
- layers on y, layer 0 on top, every row labelled with its integer (the layer's number, or
  the head's label L3H2 for head x position grids); heads on x as integers 0, 1, ...;
- a signed quantity on one diverging scale, RdBu: white at its neutral value (0; for
  patching, the unpatched run), blue above it (the answer gains), red below (it loses),
  the range symmetric about the neutral value; an unsigned score (0..1) on white-to-blue;
- the colour bar says what the colour is; hovering a cell names its row, column and value.

Small multiples (one panel per head) carry their own layout in `layout.meta.small_multiples`:
the page's script (small_multiples.js, also put into each standalone figure) gives them as
many columns as the page's column holds, so they wrap instead of overflowing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

SIGNED_SCALE = "RdBu"       # plotly's RdBu: red (low) -> white -> blue (high)
UNSIGNED_SCALE = "Blues"    # white (0) -> blue (1)
ROW_PX = 24                 # pixels per heatmap row: every layer's label stays readable
TICK_FONT = {"size": 11}
SCRIPT = Path(__file__).with_name("small_multiples.js")


def small_multiples_script() -> str:
    """The script that lays out small multiples to their container's width (page and standalone)."""
    return SCRIPT.read_text(encoding="utf-8")


def line(y: Sequence[float], labels: Sequence[str], title: str, ytitle: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(range(len(y))), y=list(y), mode="lines+markers", text=list(labels),
                               hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="component", yaxis_title=ytitle, template="plotly_white")
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(y))), ticktext=list(labels), tickfont=TICK_FONT)
    return fig


def grid_heatmap(values: List[List[Optional[float]]], title: str, *, row_labels: Sequence[Any],
                 column_labels: Sequence[Any], row_title: str = "Layer", column_title: str = "Head",
                 neutral: float = 0.0, signed: bool = True, colorbar: str = ""):
    """A heatmap of rows (layers, or heads) x columns (heads, positions) in the one convention above.

    Cells sit at integer coordinates; the labels are tick texts, so every row keeps its label and
    a subset of layers (patching selected layers) still reads as the layers' own numbers."""
    import plotly.graph_objects as go

    rows, columns = [str(r) for r in row_labels], [str(c) for c in column_labels]
    scale = ({"colorscale": SIGNED_SCALE, "zmid": neutral} if signed
             else {"colorscale": UNSIGNED_SCALE, "zmin": 0.0, "zmax": max(1.0, _largest(values))})
    fig = go.Figure(grid_trace(values, rows, columns, row_title, column_title, **scale,
                               colorbar={"title": {"text": colorbar, "side": "right"}} if colorbar else None))
    fig.update_layout(title=title, template="plotly_white", height=grid_height(len(rows)))
    style_grid_axes(fig, rows, columns, row_title, column_title)
    return fig


def grid_trace(values, rows: Sequence[str], columns: Sequence[str], row_title: str = "Layer",
               column_title: str = "Head", **style):
    """The heatmap trace of a grid: cells at integer coordinates, hover naming row, column, value."""
    import plotly.graph_objects as go

    hover = [[[rows[i], columns[j]] for j in range(len(columns))] for i in range(len(rows))]
    return go.Heatmap(z=values, x=list(range(len(columns))), y=list(range(len(rows))), customdata=hover,
                      hovertemplate=f"{row_title} %{{customdata[0]}}, {column_title} %{{customdata[1]}}: "
                                    "%{z:.4f}<extra></extra>", **style)


def layer_head_heatmap(values: List[List[Optional[float]]], title: str, neutral: float = 0.0,
                       signed: bool = True, colorbar: str = ""):
    """A [layer][head] grid: layers 0.. on y (0 on top), heads 0.. on x."""
    return grid_heatmap(values, title, row_labels=range(len(values)), column_labels=range(len(values[0])),
                        neutral=neutral, signed=signed, colorbar=colorbar)


def style_grid_axes(fig, rows: Sequence[str], columns: Sequence[str], row_title: str = "Layer",
                    column_title: str = "Head", row: Optional[int] = None, col: Optional[int] = None) -> None:
    """The convention's axes on one (sub)plot: every row labelled, row 0 on top, integer columns."""
    where = {"row": row, "col": col} if row is not None else {}
    fig.update_yaxes(title=row_title, tickmode="array", tickvals=list(range(len(rows))), ticktext=list(rows),
                     autorange="reversed", tickfont=TICK_FONT, showgrid=False, zeroline=False, **where)
    fig.update_xaxes(title=column_title, tickmode="array", tickvals=list(range(len(columns))),
                     ticktext=list(columns), tickfont=TICK_FONT, showgrid=False, zeroline=False, **where)


def grid_height(rows: int) -> int:
    return max(320, ROW_PX * rows + 170)


def _largest(values) -> float:
    return max((v for row in values for v in row if v is not None), default=1.0)


def hbar(values: Sequence[float], labels: Sequence[str], title: str, xtitle: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(values), y=list(labels), orientation="h"))
    fig.update_layout(title=title, xaxis_title=xtitle, template="plotly_white",
                      yaxis={"autorange": "reversed", "tickfont": TICK_FONT}, height=max(360, 22 * len(labels) + 160))
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


def distribution(groups: Dict[str, Sequence[Optional[float]]], hover: Sequence[str], title: str, ytitle: str,
                 reference: Optional[float] = None):
    """Per-prompt values side by side: one box per group with every prompt as a point (hover: the
    prompt), so a reader sees which prompts carry an effect and which do not. `hover[i]` names
    prompt i in every group; `reference` draws a dotted line (the neutral value)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in groups.items():
        fig.add_trace(go.Box(y=list(values), name=name, boxpoints="all", jitter=0.4, pointpos=0,
                             text=list(hover)[:len(values)], marker={"size": 5, "opacity": 0.7},
                             line={"width": 1}, fillcolor="rgba(0,0,0,0)",
                             hovertemplate="%{text}<br>%{y:.4f}<extra>" + name + "</extra>"))
    if reference is not None:
        fig.add_hline(y=reference, line={"dash": "dot", "color": "grey"})
    fig.update_layout(title=title, yaxis_title=ytitle, template="plotly_white", showlegend=False,
                      height=420, xaxis={"tickfont": TICK_FONT})
    return fig


# ------------------------------------------------------------------ small multiples


def small_multiples(panels: Sequence[Dict[str, Any]], titles: Sequence[str], title: str, *,
                    labels: Sequence[str], x_title: str, y_title: str, colorbar: str, cell_min: int = 170,
                    cell_max: int = 420, columns: int = 4):
    """Square heatmap panels (one per head) sharing one colour axis (0..1, white-to-blue) and the
    same tick labels. Laid out here in up to `columns` columns (the figure as a notebook or a
    PNG shows it); on a page, small_multiples.js re-lays them to the width at hand.

    panels: [{"z": [[...]], "customdata": ..., "hovertemplate": ...}], one per title."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Heatmap(coloraxis="coloraxis", name=name, **panel) for name, panel in zip(titles, panels)])
    longest = max((len(label) for label in labels), default=4)
    margin = {"l": 56 + 7 * longest, "r": 90, "t": 90, "b": 56 + 7 * longest}  # tick labels and axis title
    ticks = {"tickmode": "array", "tickvals": list(range(len(labels))), "ticktext": list(labels),
             "tickfont": {"size": 10}, "showgrid": False, "zeroline": False, "automargin": True}
    meta = {"small_multiples": {"count": len(titles), "titles": list(titles), "cell_min": cell_min,
                                "cell_max": cell_max, "gap": 28, "columns": columns,
                                "xaxis": {**ticks, "tickangle": -90}, "yaxis": {**ticks, "autorange": "reversed"},
                                "x_title": x_title, "y_title": y_title}}
    fig.update_layout(title=title, template="plotly_white", margin=margin, meta=meta,
                      coloraxis={"colorscale": UNSIGNED_SCALE, "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": {"text": colorbar, "side": "right"}, "thickness": 14}})
    lay_out_panels(fig, nominal_width=1000)
    return fig


def lay_out_panels(fig, nominal_width: int) -> None:
    """The layout small_multiples.js computes, for a fixed width (the figure outside a page)."""
    sm = fig.layout.meta["small_multiples"]
    margin = fig.layout.margin
    usable = nominal_width - margin.l - margin.r
    count, gap = sm["count"], sm["gap"]
    columns = max(1, min(count, sm["columns"], (usable + gap) // (sm["cell_min"] + gap)))
    rows = -(-count // columns)
    cell = min(sm["cell_max"], (usable - (columns - 1) * gap) / columns)
    height = rows * cell + (rows - 1) * gap
    layout: Dict[str, Any] = {"width": nominal_width, "height": height + margin.t + margin.b, "annotations": []}
    step = max(1, -(-12 * len(sm["xaxis"]["tickvals"]) // int(cell)))  # tick labels at least 12 px apart
    for c in range(columns):
        last_row = (count - 1 - c) // columns
        x0 = c * (cell + gap) / usable
        layout[_axis("x", c)] = {**_thinned(sm["xaxis"], step), "domain": [x0, min(1.0, x0 + cell / usable)],
                                 "anchor": _ref("y", last_row), "title": {"text": sm["x_title"] if c == 0 else ""}}
    for r in range(rows):
        top = 1 - r * (cell + gap) / height
        layout[_axis("y", r)] = {**_thinned(sm["yaxis"], step), "domain": [max(0.0, top - cell / height), top],
                                 "anchor": "x", "title": {"text": sm["y_title"] if r == 0 else ""}}
    for i, name in enumerate(sm["titles"]):
        r, c = divmod(i, columns)
        fig.data[i].update(xaxis=_ref("x", c), yaxis=_ref("y", r))
        x0 = c * (cell + gap) / usable
        layout["annotations"].append({"text": name, "x": x0 + cell / usable / 2, "y": 1 - r * (cell + gap) / height,
                                      "xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 12}})
    fig.update_layout(layout)


def _thinned(axis: Dict[str, Any], step: int) -> Dict[str, Any]:
    return {**axis, "tickvals": axis["tickvals"][::step], "ticktext": axis["ticktext"][::step]}


def _axis(letter: str, index: int) -> str:
    return f"{letter}axis{index + 1 if index else ''}"


def _ref(letter: str, index: int) -> str:
    return f"{letter}{index + 1 if index else ''}"
