"""mi-dsl: declarative mechanistic-interpretability experiments from YAML specs.

Importing the package is cheap: torch, transformer_lens and plotly load only when a
spec actually runs (`mi_dsl.run`).
"""
from __future__ import annotations

__version__ = "0.1.0"
LANGUAGE_VERSION = 1


def run(spec_path, overrides=None, **options):
    """Run a spec and return its results (the same dict as the run's results.json)."""
    from .runtime.run import run_spec

    return run_spec(spec_path, overrides=overrides or [], **options).results
