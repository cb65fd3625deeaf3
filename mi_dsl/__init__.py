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

from ._version import LANGUAGE_VERSION, __version__  # noqa: F401
from .api import plan, run, validate  # the real signatures (api imports nothing heavy)

__all__ = ["run", "validate", "plan", "Results", "MiError"]


def __getattr__(name):
    if name == "Results":
        from .results import Results

        return Results
    if name == "MiError":
        from .errors import MiError

        return MiError
    raise AttributeError(f"module 'mi_dsl' has no attribute {name!r}")
