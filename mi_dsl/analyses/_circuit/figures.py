"""Report figures of a circuit result (plotly, imported lazily): faithfulness curves, the
circuit as a layered graph, method comparison and bootstrap stability."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

MAX_DRAWN_EDGES = 250
MAX_SCATTER_POINTS = 6000


def figures(data: Dict[str, Any]) -> List[Tuple[str, Any]]:
    out = []
    if any(m.get("curve") for m in data["methods"].values()):
        out.append(("faithfulness", curve_figure(data)))
    out.append(("circuit_graph", graph_figure(data, next(iter(data["methods"])))))
    for row in data.get("comparison", [])[:3]:
        out.append((f"scores_{row['a']}_vs_{row['b']}", comparison_figure(data, row)))
    if data.get("stability"):
        out.append(("stability", stability_figure(data["stability"])))
    return out


def curve_figure(data):
    import plotly.graph_objects as go

    fig = go.Figure()
    note = ""
    for name, m in data["methods"].items():
        c = m.get("curve")
        if not c:
            continue
        fig.add_trace(go.Scatter(x=c["x"], y=c["faithfulness"], mode="lines+markers",
                                 name=f"{name} (CPR {_n(c['cpr'])}, CMD {_n(c['cmd'])})",
                                 text=[f"{k}% requested, {e} kept" for k, e in zip(c["levels_percent"], c["kept_edges"])],
                                 hovertemplate="%{text}<br>edges %{x:.4f}<br>f %{y:.3f}<extra></extra>"))
        if c.get("random_faithfulness"):
            fig.add_trace(go.Scatter(x=c["random_x"], y=c["random_faithfulness"], mode="lines+markers",
                                     line={"dash": "dash", "color": "grey"},
                                     name=f"random (CPR {_n(c['random_cpr'])}, CMD {_n(c['random_cmd'])})"))
        note = c["area_note"]
    fig.add_hline(y=1.0, line={"dash": "dot", "color": "black"})
    fig.update_layout(title=f"Faithfulness of top-k% circuits ({data['ablation']} ablation, ranked by "
                            f"{data['select']})<br><sup>{note}</sup>",
                      xaxis_title="fraction of edges kept (log scale)", yaxis_title="faithfulness f",
                      xaxis_type="log", template="plotly_white")
    return fig


def graph_figure(data, method: str):
    """Nodes by layer (x) and head (y); edges of the circuit, width by |score|, colour by sign."""
    import plotly.graph_objects as go

    from .run import graph_from_data

    g = graph_from_data(data)
    m = data["methods"][method]
    edges = g.edge_mask().nonzero().tolist()
    owner = g.owner().tolist()
    kept = sorted(m["circuit"], key=lambda i: -abs(m["scores"][i]))[:MAX_DRAWN_EDGES]
    top = max((abs(m["scores"][i]) for i in kept), default=1.0) or 1.0

    def position(node: int):  # forward node index, or -1 for the logits
        if node < 0:
            return g.n_layers, g.n_heads / 2
        x = g.layer_of_forward(node)
        if node == 0:
            return x, g.n_heads / 2
        offset = (node - 1) % (g.n_heads + 1)
        return x, (g.n_heads / 2 if offset == g.n_heads else offset)

    fig = go.Figure()
    used = set()
    mids_x, mids_y, mids_text = [], [], []
    for i in kept:
        s, t = edges[i]
        x0, y0 = position(s)
        x1, y1 = position(owner[t])
        score = m["scores"][i]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"width": 0.5 + 6 * abs(score) / top,
                                       "color": "#d62728" if score < 0 else "#1f77b4"}, opacity=0.6))
        mids_x.append((x0 + x1) / 2)
        mids_y.append((y0 + y1) / 2)
        mids_text.append(f"{g.edge_name(s, t)}: {score:.4g}")
        used.update([s, owner[t]])
    fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", marker={"size": 4, "opacity": 0.01},
                             text=mids_text, hovertemplate="%{text}<extra></extra>", showlegend=False))
    names = {n: (g.forward_names[n] if n >= 0 else "logits") for n in used}
    xy = [position(n) for n in used]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text",
                             text=[names[n] for n in used], textposition="top center", showlegend=False,
                             marker={"size": 10, "color": "#333"}, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=f"Circuit of {method}: {m['circuit_edges']} edges, {m['circuit_nodes']} nodes "
                            f"(the {len(kept)} strongest drawn; red: score < 0, blue: > 0)",
                      xaxis_title="layer (MLPs at +0.5; input at -1, logits at the right)",
                      yaxis_title="head", template="plotly_white", height=650)
    return fig


def comparison_figure(data, row):
    import plotly.graph_objects as go

    a, b = data["methods"][row["a"]]["scores"], data["methods"][row["b"]]["scores"]
    step = max(1, len(a) // MAX_SCATTER_POINTS)
    fig = go.Figure(go.Scatter(x=a[::step], y=b[::step], mode="markers", marker={"size": 3}))
    fig.update_layout(title=f"Edge scores: {row['a']} vs {row['b']} (Spearman {_n(row['spearman_signed'])}, "
                            f"circuit Jaccard {_n(row['circuit_jaccard'])})",
                      xaxis_title=row["a"], yaxis_title=row["b"], template="plotly_white")
    return fig


def stability_figure(stability):
    import plotly.graph_objects as go

    rows = stability["resamples"]
    fig = go.Figure(go.Bar(x=[r["resample"] for r in rows], y=[r["jaccard_to_full"] for r in rows]))
    fig.update_layout(title=f"Bootstrap stability of the {stability['method']} circuit: Jaccard overlap with the "
                            f"full-data circuit (mean {_n(stability['mean_jaccard_to_full'])}; pairwise "
                            f"{_n(stability['mean_pairwise_jaccard'])}; {stability['edges_in_every_resample']} of "
                            f"{stability['circuit_edges']} edges in every resample)",
                      xaxis_title="resample", yaxis_title="Jaccard", template="plotly_white")
    return fig


def _n(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
