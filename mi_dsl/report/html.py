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
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from ..analyses._figures import small_multiples_script
from ..core.log import RunLog, json_safe
from ..errors import Location
from ..spec.paths import make_folder, os_fault
from .page import index_page
from .per_prompt import dataset_figures, final_pair_rows
from .static import export_static


PARTIAL = ".partial-"  # a run folder being written: Results.load refuses it


FIT_STANDALONE = small_multiples_script() + """
(function () { var gd = document.getElementById('{plot_id}'); var fig = {data: gd.data, layout: gd.layout};
  miDslFit(fig, gd.clientWidth); Plotly.react(gd, fig.data, fig.layout); miDslWatch(gd, fig); })();"""


def new_run_dir(folder: Path) -> Path:
    """An empty, new <timestamp> folder under <runs>/<name>: mkdir, not exists(), so two runs of a
    sweep finishing in the same second each get their own."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, suffix = folder / stamp, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            suffix += 1
            run_dir = folder / f"{stamp}-{suffix}"


def write_report(log: RunLog, root: Path, where: Optional[Location] = None) -> Path:
    """Write the run folder atomically: every file goes into a hidden .partial- folder, which is
    renamed onto the reserved <timestamp> folder only once complete (results.json last). A failed
    write (a full disk, a read-only folder, an interrupt) leaves no folder Results.load accepts.
    <runs>/<name> is created without following links (spec/paths.make_folder)."""
    where = where or Location(log.spec["file"])
    folder = make_folder(Path(root), [log.spec["name"]], where)
    run_dir = partial = None
    try:
        run_dir = new_run_dir(folder)
        partial = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=folder))
        _write_contents(log, partial)
        os.chmod(partial, run_dir.stat().st_mode & 0o7777)  # mkdtemp's 0700 -> the umask's, as mkdir gives
        os.rename(partial, run_dir)  # onto the empty reserved folder: atomic on POSIX
        return run_dir
    except BaseException as err:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        if isinstance(err, OSError):
            raise os_fault(err, f"write the report to '{folder}'", where) from None
        raise


def _write_contents(log: RunLog, run_dir: Path) -> None:
    data = log.to_json()
    (run_dir / "spec.resolved.yaml").write_text(yaml.safe_dump(data["spec"]["resolved"], sort_keys=False))
    tables = _write_tables(data, run_dir)
    figures = _write_figures({"dataset": dataset_figures(data), **log.figures}, run_dir)
    _write_files(log, run_dir, tables)
    formats = list((data["spec"]["resolved"].get("output") or {}).get("static") or [])
    static = export_static(log, run_dir, formats)
    (run_dir / "index.html").write_text(index_page(data, tables, figures, static, run_dir))
    (run_dir / "results.json").write_text(json.dumps(json_safe(data), indent=1))  # last: the run is complete


def _write_tables(data, run_dir: Path) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    (run_dir / "tables").mkdir()
    stages = [{k: s[k] for k in ("step", "description", "before", "after")} for s in data["dataset"]["stages"]]
    if stages:
        _csv(run_dir / "tables" / "pipeline.csv", stages)
        out.setdefault("dataset", []).append("tables/pipeline.csv")
    _csv(run_dir / "tables" / "pairs.csv", data["dataset"]["pairs"])
    out.setdefault("dataset", []).append("tables/pairs.csv")
    candidates = candidate_csv_rows(data)
    if candidates:  # written for a failed keep too: the metrics to pick thresholds from
        _csv(run_dir / "tables" / "candidates.csv", candidates)
        out.setdefault("dataset", []).append("tables/candidates.csv")
    final = final_pair_rows(data)
    if final:
        _csv(run_dir / "tables" / "per_prompt.csv", final)
        out.setdefault("dataset", []).append("tables/per_prompt.csv")
    for analysis_id, tables in data["tables"].items():
        for name, rows in tables.items():
            if rows:
                path = f"tables/{analysis_id}__{name}.csv"
                _csv(run_dir / path, rows)
                out.setdefault(analysis_id, []).append(path)
    return out


def candidate_csv_rows(data) -> List[Dict]:
    """The pairs the last keep-condition read, each with its clean and corrupted metrics and whether it
    was kept (results.json: dataset.candidate_pairs and candidate_metrics, in the same order)."""
    rows = [dict(row) for row in data["dataset"].get("candidate_pairs") or []]
    for record, metrics in (data.get("candidate_metrics") or {}).items():
        for name, values in metrics.items():
            for row, value in zip(rows, values):
                row[f"{record}_{name}"] = value
    return rows


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


def _write_figures(figures, run_dir: Path) -> Dict[str, List[Tuple[str, str, str]]]:
    """analysis id (or "dataset") -> [(name, kind 'plotly' or 'html', path)], in the analysis's order."""
    out: Dict[str, List[Tuple[str, str, str]]] = {}
    folder = run_dir / "figures"
    folder.mkdir()
    for analysis_id, figs in figures.items():
        for name, fig in figs:
            path = folder / f"{analysis_id}__{name}.html"
            if isinstance(fig, str):  # an HTML page (the circuitsvis view, its JS inlined)
                path.write_text(fig)
                out.setdefault(analysis_id, []).append((name, "html", f"figures/{path.name}"))
                continue
            # "directory": one plotly.min.js beside the figures, so each opens offline; the post script
            # fits the figure to the window as the report fits it to its column.
            import plotly.io as pio

            data = fig.to_dict()  # once: both writers would copy and check the figure again
            pio.write_html(data, str(path), include_plotlyjs="directory", full_html=True, post_script=FIT_STANDALONE,
                           validate=False)
            path.with_suffix(".json").write_text(pio.to_json(data, validate=False))
            out.setdefault(analysis_id, []).append((name, "plotly", f"figures/{path.name}"))
    return out
