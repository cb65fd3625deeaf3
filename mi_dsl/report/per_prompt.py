"""The report's per-prompt views of the dataset: which prompts carry the effect.

- the final pairs' clean and corrupted metric as a distribution (a box per record, every
  prompt a point) and as a sortable table with the prompts' text and every column the run log
  gives a pair (answer and foil, and whatever later columns it carries);
- the keep-condition's candidates: clean against corrupted metric, kept and rejected apart, and
  the rejected ones in a sortable table with their metrics (their prompts when the log has them).

Rows come from the run log only; a list that does not line up with its partner (a log written
before a field existed) is shown without the partner, never paired by guess.
"""
from __future__ import annotations

import html
from typing import Any, Dict, List, Optional, Sequence

e = html.escape
TABLE_ROWS = 1000  # rows shown inline; the CSV holds every row


def final_pair_rows(r: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per final pair: its index, the pair's own fields, then each record's metrics."""
    pairs = r["dataset"].get("pairs") or []
    rows = []
    for index, pair in enumerate(pairs):
        row: Dict[str, Any] = {"pair": index, **pair}
        for record, metrics in (r.get("per_prompt") or {}).items():
            for name, values in metrics.items():
                if len(values) == len(pairs):
                    row[f"{record} {name}"] = values[index]
        rows.append(row)
    return rows


def candidate_rows(r: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per candidate the keep-condition judged: kept or not (when the log says), its
    prompts (when the log has them), its metrics."""
    metrics = r.get("candidate_metrics") or {}
    count = max((len(v) for m in metrics.values() for v in m.values()), default=0)
    known = list(r["dataset"].get("candidate_pairs") or [])  # index for index with candidate_metrics
    if len(known) != count:
        known = [{} for _ in range(count)]  # an older log: metrics without prompts
    rows = []
    for index, candidate in enumerate(known):
        row: Dict[str, Any] = {"candidate": index}
        if "kept" in candidate:
            row["kept"] = "yes" if candidate["kept"] else "no"
        row.update({k: v for k, v in candidate.items() if k != "kept"})
        for record, values in metrics.items():
            for name, column in values.items():
                if len(column) == count:
                    row[f"{record} {name}"] = column[index]
        rows.append(row)
    return rows


def dataset_figures(r: Dict[str, Any]) -> List[tuple]:
    """[(name, plotly figure)]: the final pairs' metric distribution and the keep-condition's
    candidates (when a keep step ran)."""
    from ..analyses._figures import distribution

    out = []
    rows = final_pair_rows(r)
    metric = r.get("metric")
    groups = {record: [row.get(f"{record} {metric}") for row in rows] for record in ("clean", "corrupted")
              if rows and f"{record} {metric}" in rows[0]}
    if groups:
        hover = [f"pair {row['pair']}: {row.get('clean', '')}" for row in rows]
        out.append(("per_prompt_metric", distribution(
            groups, hover, f"{metric} of each final pair, clean and corrupted ({len(rows)} pairs)", metric,
            reference=0.0)))
    candidates = candidate_rows(r)
    if candidates and f"clean {metric}" in candidates[0] and f"corrupted {metric}" in candidates[0]:
        out.append(("keep_candidates", _candidates_figure(candidates, metric)))
    return out


def _candidates_figure(rows, metric: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = {"kept": [r for r in rows if r.get("kept") == "yes"],
              "rejected": [r for r in rows if r.get("kept") == "no"],
              "candidates": [r for r in rows if "kept" not in r]}
    colours = {"kept": "#2a7ab0", "rejected": "#d0523a", "candidates": "#777"}
    for name, members in groups.items():
        if members:
            fig.add_trace(go.Scatter(
                x=[m[f"clean {metric}"] for m in members], y=[m[f"corrupted {metric}"] for m in members],
                mode="markers", name=f"{name} ({len(members)})", marker={"size": 5, "color": colours[name]},
                text=[f"candidate {m['candidate']}: {m.get('clean', '')}" for m in members],
                hovertemplate="%{text}<br>clean %{x:.4f}<br>corrupted %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"The keep-condition's candidates: clean against corrupted {metric}",
                      xaxis_title=f"clean {metric}", yaxis_title=f"corrupted {metric}", template="plotly_white",
                      height=460)
    return fig


def sortable_table(rows: Sequence[Dict[str, Any]], caption: str, link: Optional[str] = None) -> str:
    """A table that sorts by a clicked column, scrolled inside its own box, at most TABLE_ROWS rows."""
    if not rows:
        return ""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{e(str(f))}</th>" for f in fields)
    body = "".join("<tr>" + "".join(_cell(row.get(f)) for f in fields) + "</tr>" for row in rows[:TABLE_ROWS])
    more = (f" The first {TABLE_ROWS} of {len(rows)} rows are shown." if len(rows) > TABLE_ROWS else "")
    where = f" All rows: <a href='{e(link)}'>{e(link)}</a>." if link else ""
    return (f"<p class='muted'>{e(caption)} Click a column's header to sort by it.{more}{where}</p>"
            f"<div class='table-wrap'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"<td class='num' data-value='{value!r}'>{value:.4f}</td>"
    if isinstance(value, (int, bool)) or value is None:
        return f"<td class='num'>{'' if value is None else value}</td>"
    if isinstance(value, (list, tuple)):
        return f"<td>{e(' | '.join(map(str, value)))}</td>"
    return f"<td class='text'>{e(str(value))}</td>"
