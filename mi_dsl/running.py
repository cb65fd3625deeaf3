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
             out_dir: Optional[str] = None, progress: bool = True, threads: Optional[int] = None,
             limits=None, yes: bool = False) -> RunOutcome:
    """`limits`: bounds raised from the command line (mi_dsl/limits.py); `yes`: start even when the
    estimate passes the spec's run.max_cost (compile/cost.py)."""
    from .compile import prepare
    from .models.gguf_job import model_too
    from .runtime.run import progress_printer

    started = time.perf_counter()
    # The run loads the model next: a GGUF's conversion makes both at once, and says so.
    with model_too(progress_printer(progress)):
        prepared = prepare(spec_path, list(overrides), list(allow_paths), limits=limits)
    return run_prepared(prepared, started=started, fresh=fresh, out_dir=out_dir, progress=progress, threads=threads,
                        yes=yes)


def run_prepared(prepared, *, started: Optional[float] = None, fresh: bool = False, out_dir: Optional[str] = None,
                 progress: bool = True, threads: Optional[int] = None, yes: bool = False) -> RunOutcome:
    """Run a prepared spec (`compile.prepare`) and write its report (threads: runtime/threads.py). Before
    the model loads: the cost (compile/cost.py; `yes`: start a run estimated over its max_cost) and the
    runs folder (runtime/folders.py: <runs>/<name>/.store made without following links). A keep-condition
    that leaves no prompt still writes the failed run (its candidates' metrics)."""
    from .compile.cost import check_cost
    from .errors import NoPromptsLeft
    from .report.html import write_report
    from .runtime.folders import prepare_folders, runs_location, runs_root_of
    from .runtime.run import execute

    check_cost(prepared, yes)
    store_dir = prepare_folders(prepared.spec, out_dir)
    root, where = runs_root_of(prepared.spec, out_dir), runs_location(prepared.spec, out_dir)
    try:
        log = execute(prepared, started=started, fresh=fresh, store_dir=store_dir, progress=progress,
                      threads=threads)
    except NoPromptsLeft as err:  # the candidates' metrics are what the user needs to pick thresholds
        if err.log is not None:
            run_dir = write_report(err.log, root, where)
            err.hint += f"; this failed run wrote them to {run_dir / 'tables' / 'candidates.csv'}"
        raise
    prepared.tokenizer.remember()  # token texts the analyses and the log asked for (dataset/token_memo.py)
    run_dir = write_report(log, root, where)
    return RunOutcome(log, run_dir, run_dir / "index.html")
