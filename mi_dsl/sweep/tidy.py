"""Every number of every finished run in one long table, the axes as columns.

One row per number of a run's results.json: the axes' value labels, `point`, `section`
(baselines, dataset, per_prompt, an analysis id, ...), `quantity` (the dotted path inside
it), `index` (list positions, e.g. "3,2" for layer 3 head 2 of a [layer, head] grid),
`label` (the text fields of a table row, e.g. "head=L11H2") and `value`. Run-dependent
bookkeeping (timings, provenance, store counts, forward-pass counts, shared-pass forwards,
threads) is left out: it differs between two runs of the same work, the numbers do not.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

BOOKKEEPING = ("timings", "provenance", "store", "forward_passes", "shared_passes", "threads", "warnings", "spec",
               "format_version", "status", "plan", "tables")  # the run log's own fields; tables repeat analyses
DATASET_TEXT = ("pairs", "examples")  # the run log's final pairs and token views: prompts, not measurements


def finished_runs(sweep) -> List[Dict[str, Any]]:
    """[(point, record, results)] for every point with a record, in point order."""
    out = []
    for point in sweep.points:
        path = sweep.out_dir / "points" / f"{point.id}.json"
        try:
            record = json.loads(path.read_text())
            results = json.loads((sweep.out_dir / record["run_dir"] / "results.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        out.append({"point": point, "record": record, "results": results})
    return out


def tidy_rows(sweep, runs) -> List[Dict[str, Any]]:
    rows = []
    for run in runs:
        point = run["point"]
        head = {axis.name: point.labels[axis.name] for axis in sweep.axes}
        head["point"] = point.id
        for section, value in run["results"].items():
            if section in BOOKKEEPING:
                continue
            if section == "dataset":
                value = {k: v for k, v in value.items() if k not in DATASET_TEXT}
            if section == "analyses":
                for analysis_id, data in value.items():
                    for quantity, index, label, number in _numbers(data, ""):
                        rows.append({**head, "section": analysis_id, "quantity": quantity, "index": index,
                                     "label": label, "value": number})
                continue
            for quantity, index, label, number in _numbers(value, ""):
                rows.append({**head, "section": section, "quantity": quantity, "index": index, "label": label,
                             "value": number})
    return rows


def _numbers(value: Any, path: str, index: str = "", label: str = "") -> Iterator[tuple]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield path, index, label, (float(value) if math.isfinite(value) else float("nan"))
        return
    if isinstance(value, dict):
        text = _text_fields(value) if index else ""
        for key, inner in value.items():
            yield from _numbers(inner, f"{path}.{key}" if path else str(key), index, label or text)
        return
    if isinstance(value, (list, tuple)):
        for i, inner in enumerate(value):
            yield from _numbers(inner, path, f"{index},{i}" if index else str(i), label)


def _text_fields(row: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in row.items() if isinstance(v, str))


def write_tidy(sweep, runs, folder: Path) -> Optional[Any]:
    """results.csv and results.parquet; returns the DataFrame (None when nothing finished)."""
    import pandas as pd

    rows = tidy_rows(sweep, runs)
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    for axis in sweep.axes:
        frame[axis.name] = frame[axis.name].astype(str)
    frame.to_csv(folder / "results.csv", index=False)
    frame.to_parquet(folder / "results.parquet", index=False)
    return frame
