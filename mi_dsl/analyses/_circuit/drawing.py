"""The circuit as a layered graph (plotly, imported lazily).

Layout: x is the layer (input at the left, the logits at the right); each layer's heads sit
in its column on rows h0 .. h{H-1} and its MLP half a layer to the right on a row of its
own below them, so no two nodes share a place. The figure is sized so that a node label
fits in the room between neighbours on its row (LAYER_PX per layer, ROW_PX per row), so
labels never overlap whatever the model's shape (a browser test checks it). Edges are
drawn from source to target node (a q/k/v edge to its head; a grouped key/value edge to
its group's first head), width by |score|, red for negative and blue for positive scores,
dash by the input they feed; hovering an edge's midpoint shows its name and score.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

MAX_DRAWN_EDGES = 250
LAYER_PX = 74      # room for a label such as "a17.h11" at FONT_PX between two columns
ROW_PX = 42
FONT_PX = 11
MARGIN = {"l": 70, "r": 40, "t": 90, "b": 60}
DASH = {"q": "dot", "k": "dash", "v": "longdash"}


def node_position(graph, node: int) -> Tuple[float, float]:
    """(x, y) of a forward node, or of the logits for node = -1."""
    middle = (graph.n_heads - 1) / 2
    if node < 0:
        return float(graph.n_layers), middle
    if node == 0:
        return -1.0, middle
    layer, offset = divmod(node - 1, graph.n_heads + 1)
    if offset == graph.n_heads:
        return layer + 0.5, -1.0           # the MLP row, below the heads
    return float(layer), float(offset)


def node_label(graph, node: int) -> str:
    return "logits" if node < 0 else graph.forward_names[node]


def figure_size(graph) -> Tuple[int, int]:
    width = MARGIN["l"] + MARGIN["r"] + LAYER_PX * (graph.n_layers + 2)
    height = MARGIN["t"] + MARGIN["b"] + ROW_PX * (graph.n_heads + 2)
    return max(width, 700), max(height, 420)


def graph_figure(data: Dict, method: str):
    import plotly.graph_objects as go

    from .run import graph_from_data

    g = graph_from_data(data)
    m = data["methods"][method]
    names = g.edge_names()
    where = g.edge_mask().nonzero().tolist()
    index = {name: i for i, name in enumerate(names)}
    owner = g.owner().tolist()
    drawn = sorted((index[e] for e in m["circuit"]), key=lambda i: -abs(m["scores"][names[i]]))[:MAX_DRAWN_EDGES]
    top = max((abs(m["scores"][names[i]]) for i in drawn), default=1.0) or 1.0
    fig = go.Figure()
    used = set()
    mids: List[Tuple[float, float, str]] = []
    for i in drawn:
        s, t = where[i]
        score = m["scores"][names[i]]
        target = owner[t]
        (x0, y0), (x1, y1) = node_position(g, s), node_position(g, target)
        letter = g.backward_names[t][-2] if "<" in g.backward_names[t] else ""
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"width": 0.6 + 6 * abs(score) / top, "dash": DASH.get(letter, "solid"),
                                       "color": "#d62728" if score < 0 else "#1f77b4"}, opacity=0.55))
        mids.append(((x0 + x1) / 2, (y0 + y1) / 2, f"{names[i]}<br>score {score:.5g}"))
        used.update([s, target])
    fig.add_trace(go.Scatter(x=[p[0] for p in mids], y=[p[1] for p in mids], mode="markers",
                             marker={"size": 7, "opacity": 0.01}, text=[p[2] for p in mids],
                             hovertemplate="%{text}<extra></extra>", showlegend=False, name="edges"))
    nodes = sorted(used, key=lambda n: (n < 0, n))
    xy = [node_position(g, n) for n in nodes]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", name="nodes",
                             text=[node_label(g, n) for n in nodes], textposition="middle center",
                             textfont={"size": FONT_PX}, showlegend=False, hovertemplate="%{text}<extra></extra>",
                             marker={"size": 36, "symbol": "square", "color": "rgba(240,240,240,0.95)",
                                     "line": {"color": "#555", "width": 1}}))
    width, height = figure_size(g)
    ticks = list(range(-1, g.n_layers + 1))
    fig.update_layout(
        title=(f"Circuit of {method}: {m['circuit_edges']} edges, {m['circuit_nodes']} nodes (the {len(drawn)} "
               "strongest drawn; width |score|; red < 0, blue > 0; q dotted, k dashed, v long-dashed)"),
        template="plotly_white", width=width, height=height, margin=MARGIN, autosize=False,
        xaxis={"title": "layer", "tickvals": ticks, "range": [-1.6, g.n_layers + 0.6], "showgrid": False,
               "ticktext": ["input"] + [str(l) for l in range(g.n_layers)] + ["logits"], "zeroline": False},
        yaxis={"title": "", "tickvals": [-1] + list(range(g.n_heads)), "range": [-1.8, g.n_heads - 0.2],
               "ticktext": ["MLP"] + [f"head {h}" for h in range(g.n_heads)], "showgrid": False, "zeroline": False,
               "autorange": "reversed"})
    return fig
