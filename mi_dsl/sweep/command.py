"""`mi-run sweep SWEEP.yaml [--backend local|ray] [--address ADDR] [--shard i/n]`.

Order: expand the axes into point files, validate every point (all faults reported
together, each naming its point, before anything runs), run the points this shard owns
that have no finished record, then write the sweep report over every finished point.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import Location, MiError, SchemaError
from . import backends
from .expand import Sweep, load_sweep, locate_point_error, write_point_files
from .inert import content_key, inert_axes
from .records import finished, fresh_done, fresh_pending, point_key, start_fresh, write_record


class PointFaults(MiError):
    """Faults of several points, each located and named by its point."""

    kind = "sweep error"

    def __init__(self, faults: List[MiError]):
        super().__init__(f"{len(faults)} point(s) failed", faults[0].location)
        self.faults = faults

    def format(self) -> str:
        return "\n".join(f.format() for f in self.faults)


@dataclass
class SweepOutcome:
    sweep: Sweep
    report_path: Path
    ran: List[str] = field(default_factory=list)        # point ids run now
    skipped: List[str] = field(default_factory=list)    # finished before
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (point id, message)


def run_sweep(path, backend: str = "local", address: Optional[str] = None, shard: Optional[str] = None,
              out_dir: Optional[str] = None, fresh: bool = False, allow_paths: Sequence[str] = (),
              progress: bool = True, overrides: Sequence[str] = (), limits: Sequence[str] = (),
              yes: bool = False) -> SweepOutcome:
    say = _say(progress)
    if backend not in backends.BACKENDS:
        raise SchemaError(f"unknown backend '{backend}'; expected one of: {', '.join(backends.BACKENDS)}",
                          Location("--backend"))
    index, count = parse_shard(shard)
    sweep = load_sweep(path, out_dir, overrides)
    _write_points(sweep)
    keys = validate_points(sweep, allow_paths, limits)
    say(f"{len(sweep.points)} points valid; output {sweep.out_dir}")
    sweep.warnings = inert_axes(sweep, sweep.contents)
    for warning in sweep.warnings:
        print(warning.format(), file=sys.stderr, flush=True)
    mine = [p for p in sweep.points if p.index % count == index]
    recompute = start_fresh(sweep, mine) if fresh else fresh_pending(sweep)
    if recompute and not fresh:
        say(f"an interrupted --fresh sweep left {len(recompute)} point(s) to recompute; recomputing them "
            "(their earlier results are not reused)")
    todo = [p for p in mine if p.id in recompute or finished(sweep, p, keys[p.id]) is None]
    outcome = SweepOutcome(sweep, sweep.out_dir / "index.html", skipped=[p.id for p in mine if p not in todo])
    if outcome.skipped:
        say(f"{len(outcome.skipped)} point(s) finished before: {', '.join(outcome.skipped)}")
    runs_root = str(sweep.out_dir / "runs")
    jobs = [(p, (str(sweep.point_file(p)), runs_root, point_allowances(sweep, allow_paths), p.id in recompute,
                 list(limits), yes))
            for p in todo]
    if jobs:
        say(f"running {len(jobs)} point(s) on the {backend} backend"
            + (f" (shard {index}/{count})" if count > 1 else ""))
    for point, result in backends.BACKENDS[backend](jobs, sweep.resources, address):
        if "run_dir" in result:
            write_record(sweep, point, keys[point.id], Path(result["run_dir"]))
            fresh_done(sweep, point)
            outcome.ran.append(point.id)
            say(f"{point.describe()} done: {result['run_dir']}")
        else:
            message = (locate_point_error(backends.error_of(result), sweep, point).format() if "error" in result
                       else f"{point.describe()}: the run crashed: {result['crash']}")
            outcome.failed.append((point.id, message))
            say(message)
    from .report import write_sweep_report

    write_sweep_report(sweep)
    return outcome


def _write_points(sweep: Sweep) -> None:
    from ..spec.compose import load_composed

    base = load_composed(sweep.spec)
    data = base.data if isinstance(base.data, dict) else {}
    write_point_files(sweep, data, str(data.get("name", sweep.spec.stem)))


def point_allowances(sweep: Sweep, allow_paths: Sequence[str]) -> list:
    """Every point extends the sweep's base spec from the sweeps folder, outside the point's tree: the
    sweep allows exactly that file (spec/paths.py), and nothing more than the user allowed."""
    return [str(a) for a in allow_paths] + [str(sweep.spec)]


def validate_points(sweep: Sweep, allow_paths: Sequence[str], limits: Sequence[str] = ()) -> Dict[str, str]:
    """Every point through the full front end (schema, meaning, tokenizer checks when a
    tokenizer is at hand); raises PointFaults naming every bad point. Returns point keys."""
    from ..compile.prepare import prepare

    keys, faults = {}, []
    for point in sweep.points:
        try:
            prepared = prepare(sweep.point_file(point), [], point_allowances(sweep, allow_paths), need_tokenizer=False,
                               limits=list(limits))
        except MiError as err:
            faults.append(locate_point_error(err, sweep, point))
            continue
        keys[point.id] = point_key(prepared.spec, prepared.plan)
        sweep.contents[point.id] = content_key(prepared)
    if faults:
        raise PointFaults(faults)
    return keys


def parse_shard(text: Optional[str]) -> Tuple[int, int]:
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise SchemaError(f"--shard expects i/n with 0 <= i < n (e.g. 0/2 and 1/2), got '{text}'",
                          Location("--shard"))
    return index, count


def _say(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"[mi-run sweep] {message}", file=sys.stderr, flush=True)
    return say
