"""Analyses: one module per kind. Importing this package registers them all.

Every module in this folder is an analysis, except `registry`, `base` and the helpers
whose names start with `_` (figures, attention capture, patching engines). To add an
analysis, drop a module with an `@analysis(...)` class here: nothing else to edit.
"""
import pkgutil
from importlib import import_module

FRAMEWORK = {"base", "registry"}
MODULE_NAMES = sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if m.name not in FRAMEWORK and not m.name.startswith("_"))

ALL_MODULES = [import_module(f"{__name__}.{name}") for name in MODULE_NAMES]
