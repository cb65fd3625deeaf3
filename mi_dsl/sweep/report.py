"""The sweep report: <output>/<name>/index.html over every finished point.

    index.html        runs table (axes, pairs, baselines, keep rates, link to each run's report);
                      stability of top heads across seeds; head-attribution heatmaps side by side
    runs.csv          the runs table
    results.csv       every number, axes as columns (tidy.py); results.parquet the same
    figures/*.html    standalone plotly figures (plotly.min.js beside them); *.json the same as plotly JSON
"""
from __future__ import annotations

import html
import itertools
from pathlib import Path
from typing import Any, Dict, List

from .tidy import finished_runs, write_tidy

SEED_AXIS = "seed"


def write_sweep_report(sweep) -> Path:
    runs = finished_runs(sweep)
    folder = sweep.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    table = runs_table(sweep, runs)
    _csv(folder / "runs.csv", table)
    frame = write_tidy(sweep, runs, folder)
    stability = head_stability(sweep, runs)
    figures = _heatmaps(sweep, runs, folder)
    (folder / "index.html").write_text(_index(sweep, runs, table, stability, figures, frame is not None))
    return folder / "index.html"


def runs_table(sweep, runs) -> List[Dict[str, Any]]:
    rows = []
    for run in runs:
        r, point = run["results"], run["point"]
        row: Dict[str, Any] = {"point": point.id, **{a.name: point.labels[a.name] for a in sweep.axes}}
        row["model"] = r.get("provenance", {}).get("model", {}).get("id")
        row["final_pairs"] = r["dataset"]["final_pairs"]
        for which in ("clean", "corrupted"):
            row[f"baseline_{which}"] = r["baselines"].get(which)
        for i, stage in enumerate(s for s in r["dataset"]["stages"] if s.get("step") == "keep"):
            row[f"keep_rate_{i}"] = stage["after"] / stage["before"] if stage["before"] else None
        row["report"] = str(Path(run["record"]["run_dir"]) / "index.html")
        rows.append(row)
    return rows


STABLE_TOP = 12  # the top heads whose agreement across seeds is measured


def head_stability(sweep, runs) -> List[Dict[str, Any]]:
    """For each analysis with a per-head table (its registration declares `per_head`) and each
    setting of the other axes: how far the top-k heads agree between seeds. overlap(a, b) =
    |top_k(a) & top_k(b)| / k, k = 12 (or the heads there are), the heads ranked as top(ID, k)
    ranks them; mean and minimum over every pair of seeds."""
    from ..analyses.base import ranked_heads

    if not any(a.name == SEED_AXIS for a in sweep.axes):
        return []
    others = [a.name for a in sweep.axes if a.name != SEED_AXIS]
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for run in runs:
        key = tuple(run["point"].labels[name] for name in others)
        groups.setdefault(key, []).append(run)
    rows = []
    for key, members in groups.items():
        for analysis_id in _per_head_ids(members[0]["results"]):
            tops = {m["point"].labels[SEED_AXIS]: ranked_heads(m["results"]["analyses"][analysis_id]["per_head"], "top",
                                                               STABLE_TOP)
                    for m in members if analysis_id in m["results"]["analyses"]}
            if len(tops) < 2:
                continue
            k = min(len(t) for t in tops.values())
            overlaps = [len(set(a[:k]) & set(b[:k])) / k for a, b in itertools.combinations(tops.values(), 2)]
            rows.append({**dict(zip(others, key)), "analysis": analysis_id, "seeds": ", ".join(tops), "k": k,
                         "mean_overlap": sum(overlaps) / len(overlaps), "min_overlap": min(overlaps)})
    return rows


def _per_head_ids(results) -> List[str]:
    """The analyses of a run's results with a [layer][head] table (declared per_head, and present)."""
    from ..core.registry import REGISTRY, load_all

    load_all()
    return [i for i, a in results.get("analyses", {}).items()
            if a.get("kind") in REGISTRY and REGISTRY[a["kind"]].per_head and a.get("per_head") is not None]


def _heatmaps(sweep, runs, folder: Path) -> List[tuple]:
    """One figure per analysis with a per-head table: every run's [layer, head] grid side by side, in
    the run report's convention (analyses/_figures.py: layer 0 on top, every layer labelled, one
    colour scale shared by the runs, white at no effect: 0, or 1 for noising patching);
    [(path, height in pixels)]."""
    if not runs:
        return []
    from plotly.subplots import make_subplots

    from ..analyses._figures import SIGNED_SCALE, grid_height, grid_trace, style_grid_axes

    out = []
    for analysis_id in dict.fromkeys(i for run in runs for i in _per_head_ids(run["results"])):
        members = [r for r in runs if analysis_id in r["results"]["analyses"]]
        cols = min(4, len(members))
        rows = (len(members) + cols - 1) // cols
        titles = [f"{m['point'].id}: " + ", ".join(f"{v}" for v in m["point"].labels.values()) for m in members]
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                            vertical_spacing=min(0.12, 0.4 / rows))
        for i, member in enumerate(members):
            grid = member["results"]["analyses"][analysis_id]["per_head"]
            row, col = i // cols + 1, i % cols + 1
            layers, heads = [str(l) for l in range(len(grid))], [str(h) for h in range(len(grid[0]))]
            fig.add_trace(grid_trace(grid, layers, heads, coloraxis="coloraxis", name=titles[i]), row=row, col=col)
            style_grid_axes(fig, layers, heads, row=row, col=col)
        # noising patching leaves a head at 1 (the clean run) when it has no effect; every other score at 0
        neutral = 1.0 if members[0]["results"]["analyses"][analysis_id].get("direction") == "noising" else 0.0
        height = rows * grid_height(len(grid))
        fig.update_layout(title=f"{analysis_id}: per-head scores (layer 0 on top, head on x)",
                          template="plotly_white", height=height,
                          coloraxis={"colorscale": SIGNED_SCALE, "cmid": neutral,
                                     "colorbar": {"title": {"text": "score", "side": "right"}}})
        path = folder / "figures" / f"{analysis_id}.html"
        fig.write_html(str(path), include_plotlyjs="directory", full_html=True)
        path.with_suffix(".json").write_text(fig.to_json())
        out.append((f"figures/{path.name}", height + 40))
    return out


def _csv(path: Path, rows) -> None:
    import csv

    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["point"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
iframe{width:100%;height:700px;border:1px solid #ddd}.muted{color:#777}.warn{color:#a05a00}"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def _table(rows, link_key: str = "") -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    fields = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(f)}</th>" for f in fields)
    body = "".join("<tr>" + "".join(
        f"<td><a href='{html.escape(str(row[f]))}'>report</a></td>" if f == link_key
        else f"<td>{_cell(row.get(f))}</td>"
        for f in fields) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _index(sweep, runs, table, stability, figures, have_numbers: bool) -> str:
    e = html.escape
    done = {r["point"].id for r in runs}
    missing = [p.describe() for p in sweep.points if p.id not in done]
    axes = "; ".join(f"<code>{e(a.name)}</code>: {e(', '.join(a.labels))}" for a in sweep.axes)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(sweep.name)}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Sweep {e(sweep.name)}</h1>",
             f"<p class='muted'>sweep {e(str(sweep.file))}; base spec {e(str(sweep.spec))}</p>",
             f"<p>Axes: {axes}. {len(runs)} of {len(sweep.points)} points finished.</p>"]
    if missing:
        parts.append("<p class='warn'>Not finished (rerun the sweep to run them): " + e("; ".join(missing)) + "</p>")
    parts += [f"<p class='warn'>{e(w.format())}</p>" for w in getattr(sweep, "warnings", [])]
    parts += ["<h2>Runs</h2>",
              "<p>Baselines are the mean metric over each run's final pairs; keep_rate_i is the fraction of "
              "candidates the i-th keep-condition kept.</p>", _table(table, link_key="report")]
    parts.append("<h2>Stability of top heads across seeds</h2>")
    if stability:
        parts += ["<p>For each setting of the other axes: overlap of the top-k heads (k = 12, ranked as top(ID, k) "
                  "ranks the analysis's per-head table) between every two seeds, |A &cap; B| / k; "
                  "1 means the same heads.</p>", _table(stability)]
    else:
        parts.append("<p class='muted'>needs a <code>seed</code> axis and an analysis with per-head scores "
                     "(head_attribution, head patching, head detection).</p>")
    if figures:
        parts.append("<h2>Per-head scores, side by side</h2>")
        parts += [f"<p><a href='{f}'>{e(f)}</a></p><iframe src='{f}' loading='lazy' style='height:{h}px'></iframe>"
                  for f, h in figures]
    parts.append("<h2>Every number</h2>")
    parts.append("<p>One row per number of every run, the axes as columns: <a href='results.csv'>results.csv</a>, "
                 "<a href='results.parquet'>results.parquet</a>; the runs table: <a href='runs.csv'>runs.csv</a>.</p>"
                 if have_numbers else "<p class='muted'>no run finished yet.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
