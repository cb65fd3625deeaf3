"""mi-dsl: declarative mechanistic-interpretability experiments from YAML specs.

    import mi_dsl
    r = mi_dsl.run("specs/tutorial.yaml")      # -> mi_dsl.Results
    r.table("head_attr"); r.figure("head_attr"); r.summary
    mi_dsl.validate("spec.yaml"); mi_dsl.plan("spec.yaml")
    mi_dsl.Results.load("runs/tutorial/<timestamp>")

Importing the package is cheap: torch, transformer_lens and plotly load only when a
spec actually runs. See docs/api.md.
"""
from __future__ import annotations

__version__ = "0.1.0"
LANGUAGE_VERSION = 1

__all__ = ["run", "validate", "plan", "Results", "MiError"]


def run(spec, overrides=None, **options):
    """Run a spec (a file path or a mapping) and return its `Results`."""
    from .api import run as _run

    return _run(spec, overrides, **options)


def validate(spec, overrides=None, **options):
    """Check a spec without loading weights; raises the located MiError, returns its warnings."""
    from .api import validate as _validate

    return _validate(spec, overrides, **options)


def plan(spec, overrides=None, **options):
    """The compiled dataset and plan of a spec (what `mi-run plan --json` prints)."""
    from .api import plan as _plan

    return _plan(spec, overrides, **options)


def __getattr__(name):
    if name == "Results":
        from .results import Results

        return Results
    if name == "MiError":
        from .errors import MiError

        return MiError
    raise AttributeError(f"module 'mi_dsl' has no attribute {name!r}")
