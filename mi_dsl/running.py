"""Run a spec end to end: prepare, execute, write the report (the front layer's one entry).

    spec file --compile.prepare--> Prepared --runtime.run.execute--> RunLog
      --report.write_report--> runs/<name>/<timestamp>/

The CLI, `mi_dsl.run` and sweep points call these; the runtime returns the frozen run log and
never writes the report itself (stages look down: the report reads the log).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .core.log import RunLog


@dataclass(frozen=True)
class RunOutcome:
    log: RunLog
    run_dir: Path
    report_path: Path

    @property
    def results(self) -> Dict[str, Any]:
        """The log as plain data: what results.json holds."""
        return self.log.to_json()


def run_spec(spec_path, overrides: Sequence[str] = (), allow_paths: Sequence[str] = (), fresh: bool = False,
             out_dir: Optional[str] = None, progress: bool = True, threads: Optional[int] = None) -> RunOutcome:
    from .compile import prepare

    started = time.perf_counter()
    prepared = prepare(spec_path, list(overrides), list(allow_paths))
    return run_prepared(prepared, started=started, fresh=fresh, out_dir=out_dir, progress=progress, threads=threads)


def run_prepared(prepared, *, started: Optional[float] = None, fresh: bool = False, out_dir: Optional[str] = None,
                 progress: bool = True, threads: Optional[int] = None) -> RunOutcome:
    """Run a prepared spec (`compile.prepare`) and write its report (threads: runtime/threads.py)."""
    from .report.html import write_report
    from .runtime.run import execute, runs_root_of

    root = runs_root_of(prepared.spec, out_dir)
    log = execute(prepared, started=started, fresh=fresh, store_dir=root / prepared.spec.name / ".store",
                  progress=progress, threads=threads)
    run_dir = write_report(log, root)
    return RunOutcome(log, run_dir, run_dir / "index.html")
