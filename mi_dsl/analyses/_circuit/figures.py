"""Report figures of a circuit result (plotly, imported lazily): faithfulness curves, the
circuit as a layered graph, method comparison and bootstrap stability."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

MAX_SCATTER_POINTS = 6000


def figures(data: Dict[str, Any]) -> List[Tuple[str, Any]]:
    out = []
    if any(m.get("curve") for m in data["methods"].values()):
        out.append(("faithfulness", curve_figure(data)))
    from .drawing import graph_figure

    out.append(("circuit_graph", graph_figure(data, next(iter(data["methods"])))))
    for row in data.get("comparison", [])[:3]:
        out.append((f"scores_{row['a']}_vs_{row['b']}", comparison_figure(data, row)))
    if data.get("stability"):
        out.append(("stability", stability_figure(data["stability"])))
    return out


def curve_figure(data):
    """Each method's faithfulness against the x-axis its areas use, one line per ranking."""
    import plotly.graph_objects as go

    fig = go.Figure()
    note, unit = "", "edges"
    dashes = {"signed": "solid", "abs": "dot", "greedy": "dashdot"}
    for name, m in data["methods"].items():
        c = m.get("curve")
        if not c:
            continue
        for ranking, series in c["series"].items():
            if ranking == "random":
                label = f"random (CPR {_n(c['random_cpr'])}, CMD {_n(c['random_cmd'])})"
                line = {"dash": "dash", "color": "grey"}
            else:
                role = [r for r, src in (("CPR", c["cpr_from"]), ("CMD", c["cmd_from"])) if src == ranking]
                value = ", ".join(f"{r} {_n(c[r.lower()])}" for r in role)
                label = f"{name}, {ranking} ranking" + (f" ({value})" if value else "")
                line = {"dash": dashes.get(ranking, "solid")}
            fig.add_trace(go.Scatter(
                x=series["x"], y=series["faithfulness"], mode="lines+markers", name=label, line=line,
                text=[f"{k}% requested ({r} {c['unit']}), {e} edges kept" for k, r, e in
                      zip(c["levels_percent"], c["requested"], series["kept_edges"])],
                hovertemplate="%{text}<br>x %{x:.4g}<br>f %{y:.3f}<extra></extra>"))
        note, unit = c["area_note"], c["unit"]
    fig.add_hline(y=1.0, line={"dash": "dot", "color": "black"})
    x_title = ("requested fraction of " + unit) if data["methods"] and _area(data) == "requested" \
        else "fraction of edges kept after pruning"
    fig.update_layout(title=f"Faithfulness of top-k% circuits ({data['ablation']} ablation)<br><sup>{note}</sup>",
                      xaxis_title=f"{x_title} (log scale)", yaxis_title="faithfulness f",
                      xaxis_type="log", template="plotly_white")
    return fig


def _area(data) -> str:
    for m in data["methods"].values():
        if m.get("curve"):
            return m["curve"]["area"]
    return "requested"


def comparison_figure(data, row):
    import plotly.graph_objects as go

    a, b = data["methods"][row["a"]]["scores"], data["methods"][row["b"]]["scores"]
    a, b = list(a.values()), [b[k] for k in a]
    step = max(1, len(a) // MAX_SCATTER_POINTS)
    fig = go.Figure(go.Scatter(x=a[::step], y=b[::step], mode="markers", marker={"size": 3}))
    fig.update_layout(title=f"Edge scores: {row['a']} vs {row['b']} (Spearman {_n(row['spearman_signed'])}, "
                            f"circuit Jaccard {_n(row['circuit_jaccard'])})",
                      xaxis_title=row["a"], yaxis_title=row["b"], template="plotly_white")
    return fig


def stability_figure(stability):
    """Jaccard overlap with the full-data circuit per bootstrap resample and per slot value, with
    each one's own CPR and CMD where the curve was measured."""
    import plotly.graph_objects as go

    rows, labels = [], []
    if "resamples" in stability:
        rows += stability["resamples"]
        labels += [f"resample {r['resample']}" for r in stability["resamples"]]
    if "by_slot" in stability:
        rows += stability["by_slot"]["groups"]
        labels += [f"{stability['by_slot']['slot']} = {r['group']}" for r in stability["by_slot"]["groups"]]
    fig = go.Figure(go.Bar(x=labels, y=[r["jaccard_to_full"] for r in rows], name="Jaccard with the full circuit"))
    for key in ("cpr", "cmd"):
        if any(r.get(key) is not None for r in rows):
            fig.add_trace(go.Scatter(x=labels, y=[r.get(key) for r in rows], mode="markers", name=key.upper(),
                                     marker={"size": 9}))
    parts = []
    for name, part in (("bootstrap", stability), ("per " + stability.get("by_slot", {}).get("slot", ""),
                                                  stability.get("by_slot"))):
        if part and part.get("mean_jaccard_to_full") is not None and (name != "bootstrap" or "resamples" in part):
            spread = part.get("cpr_spread")
            extra = f", CPR {spread['min']:.3f}..{spread['max']:.3f}" if spread else ""
            parts.append(f"{name}: mean Jaccard {_n(part['mean_jaccard_to_full'])}{extra}")
    fig.update_layout(title=f"Stability of the {stability['method']} circuit ({stability['circuit_edges']} edges)"
                            f"<br><sup>{'; '.join(parts)}</sup>",
                      yaxis_title="Jaccard / CPR / CMD", template="plotly_white")
    return fig


def _n(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
