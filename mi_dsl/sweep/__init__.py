"""Sweeps: one spec run over the product of axes, each point a normal run.

    SWEEP.yaml --expand.py--> points (one spec file per point, `extends:` the base spec)
      --validate every point before any runs (located errors naming the point)
      --backends.py (local: one after another in this process; ray: one task per point)
      --records.py (a finished point's record; a rerun skips finished points, and a
                    point cut short resumes from the shared step store)
      --tidy.py (every number of every run, axes as columns: CSV + parquet)
      --report.py (index.html comparing the runs)

Importing this package is cheap; torch loads only when a point runs, Ray only for
`--backend ray`.
"""
from __future__ import annotations

from .command import run_sweep  # noqa: F401
