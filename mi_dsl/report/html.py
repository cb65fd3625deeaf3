"""The run directory: resolved spec, results.json, tables, standalone figures, index.html.

    runs/<spec name>/<timestamp>/
      spec.resolved.yaml   the spec as run (overrides applied)
      results.json         every number: baselines, dataset sizes, analysis results, provenance
      tables/*.csv         one table per analysis result
      figures/*.html       standalone plotly figures (plotly.min.js beside them: opens offline)
      index.html           the report, linking everything
"""
from __future__ import annotations

import csv
import html
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

import yaml


def _clean(value):
    """JSON cannot hold NaN/inf: write them as null, say so nowhere silently (the report shows them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def new_run_dir(root: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (root / name).mkdir(parents=True, exist_ok=True)
    run_dir, suffix = root / name / stamp, 1
    while True:  # mkdir, not exists(): two runs of a sweep finishing in the same second each get their own
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            suffix += 1
            run_dir = root / name / f"{stamp}-{suffix}"


def write_report(session, results: Dict[str, Any], out_root: Optional[Path] = None) -> Path:
    run_dir = new_run_dir(out_root or session.spec.output_dir, session.spec.name)
    (run_dir / "spec.resolved.yaml").write_text(yaml.safe_dump(session.spec.data, sort_keys=False))
    (run_dir / "results.json").write_text(json.dumps(_clean(results), indent=1))
    tables = _write_tables(session, run_dir)
    figures = _write_figures(session, run_dir)
    (run_dir / "index.html").write_text(_index(session, results, tables, figures))
    return run_dir


def _write_tables(session, run_dir: Path) -> Dict[str, list]:
    out: Dict[str, list] = {}
    (run_dir / "tables").mkdir()
    stages = [{"step": s["step"], "description": s["description"], "before": s["before"], "after": s["after"]}
              for s in session.outcome.stages]
    if stages:
        _csv(run_dir / "tables" / "pipeline.csv", stages)
        out.setdefault("dataset", []).append("tables/pipeline.csv")
    pairs = [{"clean": p.clean.text, "corrupted": p.corrupted.text, "answer": p.answer, "foil": p.foil}
             for p in session.outcome.pairs]
    _csv(run_dir / "tables" / "pairs.csv", pairs)
    out.setdefault("dataset", []).append("tables/pairs.csv")
    for analysis_id, result in session.context.results.items():
        for name, rows in result.tables.items():
            if rows:
                path = f"tables/{analysis_id}__{name}.csv"
                _csv(run_dir / path, rows)
                out.setdefault(analysis_id, []).append(path)
    return out


def _csv(path: Path, rows) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_figures(session, run_dir: Path) -> Dict[str, list]:
    out: Dict[str, list] = {}
    folder = run_dir / "figures"
    folder.mkdir()
    for analysis_id, figs in session.figures.items():
        for name, fig in figs:
            path = folder / f"{analysis_id}__{name}.html"
            if isinstance(fig, str):  # an HTML fragment (e.g. an attention view with inlined JS)
                path.write_text(fig)
            else:
                # "directory": one plotly.min.js beside the figures, so each opens offline.
                fig.write_html(str(path), include_plotlyjs="directory", full_html=True)
            out.setdefault(analysis_id, []).append(f"figures/{path.name}")
    return out


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
iframe{width:100%;height:520px;border:1px solid #ddd}code{background:#f4f4f4;padding:0 .2em}
.warn{color:#a05a00}.muted{color:#777}"""


def _index(session, results, tables, figures) -> str:
    e = html.escape
    r = results
    rows = "".join(f"<tr><td>{e(s['description'])}</td><td>{s['before']}</td><td>{s['after']}</td></tr>"
                   for s in r["dataset"]["stages"])
    vocab = "".join(f"<tr><td>{e(n)}</td><td>{v['before']}</td><td>{v['after']}</td></tr>"
                    for n, v in r["dataset"]["vocab"].items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(session.spec.name)}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(session.spec.name)}</h1>",
        f"<p>{e(session.spec.data.get('description', ''))}</p>",
        f"<p class='muted'>spec {e(session.spec.file)} (hash {r['spec']['hash']}); model "
        f"{e(str(r['provenance']['model'].get('id')))}; device {e(r['provenance']['device'])}; seed "
        f"{r['provenance']['seed']}; <a href='results.json'>results.json</a>; "
        f"<a href='spec.resolved.yaml'>resolved spec</a></p>",
        "<h2>Dataset</h2>",
        f"<p>{r['dataset']['candidates']} candidate prompts; {r['dataset']['final_pairs']} prompt pairs after "
        f"the pipeline; token lengths {r['dataset']['token_lengths']}.</p>",
        f"<table><tr><th>vocabulary</th><th>before filter</th><th>after</th></tr>{vocab}</table>",
        f"<h3>Pipeline</h3><table><tr><th>step</th><th>prompts before</th><th>after</th></tr>{rows}</table>",
        _links(tables.get("dataset", [])),
    ]
    if r["baselines"]:
        parts += ["<h2>Baselines</h2>",
                  f"<p>Mean {e(r['metric'])}: clean <b>{r['baselines']['clean']:.4f}</b>, corrupted "
                  f"<b>{r['baselines']['corrupted']:.4f}</b>.</p>"]
    for analysis_id, a in r["analyses"].items():
        parts.append(f"<h2>{e(analysis_id)} <span class='muted'>({e(a['kind'])})</span></h2>")
        if a.get("summary"):
            parts.append(f"<p>{e(a['summary'])}</p>")
        for fig in figures.get(analysis_id, []):
            parts.append(f"<p><a href='{fig}'>{e(fig)}</a></p><iframe src='{fig}' loading='lazy'></iframe>")
        parts.append(_links(tables.get(analysis_id, [])))
    if r["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{e(w)}</li>" for w in r["warnings"])
                     + "</ul>")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
    parts.append(f"<p class='muted'>timings: {e(timing)}; {r['forward_passes']} forward passes</p></body></html>")
    return "\n".join(parts)


def _links(paths) -> str:
    if not paths:
        return ""
    return "<p>tables: " + ", ".join(f"<a href='{p}'>{html.escape(p)}</a>" for p in paths) + "</p>"
