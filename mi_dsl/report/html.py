"""The run directory, written from a RunLog (runtime/log.py) and nothing else.

    <runs root>/<spec name>/<timestamp>/
      spec.resolved.yaml   the spec as run (overrides applied)
      results.json         the run log: every number, the plan, timings, provenance, warnings
      tables/*.csv         the dataset's and each analysis's tables
      figures/*.html       standalone plotly figures (plotly.min.js beside them: opens offline)
      figures/*.json       the same figures as plotly JSON (mi_dsl.Results.figure reads them)
      figures/static/      PNG/SVG copies when output.static asks and a renderer exists
      index.html           the report (report/page.py)
"""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from ..runtime.log import RunLog, json_safe
from .page import index_page
from .static import export_static


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


def write_report(log: RunLog, root: Path) -> Path:
    run_dir = new_run_dir(Path(root), log.spec["name"])
    data = log.to_json()
    (run_dir / "spec.resolved.yaml").write_text(yaml.safe_dump(data["spec"]["resolved"], sort_keys=False))
    (run_dir / "results.json").write_text(json.dumps(json_safe(data), indent=1))
    tables = _write_tables(data, run_dir)
    figures = _write_figures(log, run_dir)
    _write_files(log, run_dir, tables)
    formats = list((data["spec"]["resolved"].get("output") or {}).get("static") or [])
    static = export_static(log, run_dir, formats)
    (run_dir / "index.html").write_text(index_page(data, tables, figures, static, run_dir))
    return run_dir


def _write_tables(data, run_dir: Path) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    (run_dir / "tables").mkdir()
    stages = [{k: s[k] for k in ("step", "description", "before", "after")} for s in data["dataset"]["stages"]]
    if stages:
        _csv(run_dir / "tables" / "pipeline.csv", stages)
        out.setdefault("dataset", []).append("tables/pipeline.csv")
    _csv(run_dir / "tables" / "pairs.csv", data["dataset"]["pairs"])
    out.setdefault("dataset", []).append("tables/pairs.csv")
    for analysis_id, tables in data["tables"].items():
        for name, rows in tables.items():
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


def _write_files(log: RunLog, run_dir: Path, links: Dict[str, List[str]]) -> None:
    """Files an analysis asks for ({relative path: text or bytes}), confined to the run directory."""
    for analysis_id, files in log.files.items():
        for relative, text in files.items():
            path = (run_dir / relative).resolve()
            if run_dir.resolve() not in path.parents:
                raise ValueError(f"analysis {analysis_id} asked to write outside the run directory: {relative}")
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):  # binary files (an interchange's safetensors subspaces)
                path.write_bytes(text)
            else:
                path.write_text(text)
            links.setdefault(analysis_id, []).append(relative)


def _write_figures(log: RunLog, run_dir: Path) -> Dict[str, List[Tuple[str, str, str]]]:
    """analysis id -> [(name, kind 'plotly' or 'html', path)], in the analysis's order."""
    out: Dict[str, List[Tuple[str, str, str]]] = {}
    folder = run_dir / "figures"
    folder.mkdir()
    for analysis_id, figs in log.figures.items():
        for name, fig in figs:
            path = folder / f"{analysis_id}__{name}.html"
            if isinstance(fig, str):  # an HTML page (the circuitsvis view, its JS inlined)
                path.write_text(fig)
                out.setdefault(analysis_id, []).append((name, "html", f"figures/{path.name}"))
                continue
            # "directory": one plotly.min.js beside the figures, so each opens offline.
            fig.write_html(str(path), include_plotlyjs="directory", full_html=True)
            path.with_suffix(".json").write_text(fig.to_json())
            out.setdefault(analysis_id, []).append((name, "plotly", f"figures/{path.name}"))
    return out
