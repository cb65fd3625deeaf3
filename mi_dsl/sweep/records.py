"""A finished point's record: `points/pNNN.json`, written atomically after its run.

The record holds a key of everything the point's results depend on that validation can
see (the resolved spec, the vocabularies' words, the model's identity, mi-dsl's version).
A rerun of the sweep skips a point whose record has the same key and whose run directory
is still there; any other point runs, and its finished steps come from the shared step
store, so a sweep killed at any moment resumes with only missing work.

`--fresh` recomputes every point of the shard. It first writes `points/fresh.json` (the
points still to recompute) and drops their records; each point leaves the list when it
finishes. A fresh sweep killed mid-way and rerun without `--fresh` therefore recomputes
the points it had not reached (their old results are neither skipped to nor reused), and
the list's file goes when it empties.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Set

from ..runtime.store import digest


def point_key(spec, plan) -> str:
    """Its inputs, the weights' content among them: a model saved again under the same path reruns."""
    from ..models.sources import weights_fingerprint

    return digest("sweep-point", spec.hash(), {n: v.content() for n, v in spec.vocabularies.items()},
                  plan.model.identity(), weights_fingerprint(plan.model))


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
    _write_json(record_path(sweep, point), record)  # atomic: a sweep killed mid-write leaves no half record
    return record


def _fresh_file(sweep) -> Path:
    return sweep.out_dir / "points" / "fresh.json"


def start_fresh(sweep, points: Sequence[Any]) -> Set[str]:
    """`--fresh`: every one of `points` is to be recomputed, and says so on disk before anything runs."""
    pending = fresh_pending(sweep) | {p.id for p in points}
    _write_json(_fresh_file(sweep), sorted(pending))
    for point in points:
        record_path(sweep, point).unlink(missing_ok=True)
    return pending


def fresh_pending(sweep) -> Set[str]:
    """Points an interrupted `--fresh` sweep has still to recompute."""
    try:
        return set(json.loads(_fresh_file(sweep).read_text()))
    except (OSError, ValueError):
        return set()


def fresh_done(sweep, point) -> None:
    pending = fresh_pending(sweep)
    if point.id not in pending:
        return
    pending.discard(point.id)
    if pending:
        _write_json(_fresh_file(sweep), sorted(pending))
    else:
        _fresh_file(sweep).unlink(missing_ok=True)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
