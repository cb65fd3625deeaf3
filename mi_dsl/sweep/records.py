"""A finished point's record: `points/pNNN.json`, written atomically after its run.

The record holds a key of everything the point's results depend on that validation can
see (the resolved spec, the vocabularies' words, the model's identity, mi-dsl's version).
A rerun of the sweep skips a point whose record has the same key and whose run directory
is still there; any other point runs, and its finished steps come from the shared step
store, so a sweep killed at any moment resumes with only missing work.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from ..runtime.store import digest


def point_key(spec, plan) -> str:
    return digest("sweep-point", spec.hash(), {n: v.items for n, v in spec.vocabularies.items()},
                  plan.model.identity())


def record_path(sweep, point) -> Path:
    return sweep.out_dir / "points" / f"{point.id}.json"


def finished(sweep, point, key: str) -> Optional[Dict[str, Any]]:
    """The point's record when it finished with these inputs and its run is still on disk."""
    try:
        record = json.loads(record_path(sweep, point).read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or not (sweep.out_dir / record.get("run_dir", "") / "results.json").is_file():
        return None
    return record


def write_record(sweep, point, key: str, run_dir: Path) -> Dict[str, Any]:
    record = {"key": key, "point": point.id, "labels": point.labels,
              "run_dir": str(Path(run_dir).resolve().relative_to(sweep.out_dir))}
    path = record_path(sweep, point)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)  # atomic: a sweep killed mid-write leaves no half record
    return record
