"""Analyses: one module per kind. Importing this package registers them all.

Every module in this folder except the shared helpers below is an analysis; to add
one, drop a module with an `@analysis(...)` class here (see README, "Extending").
"""
import pkgutil
from importlib import import_module

HELPERS = {"base", "registry", "figures", "patching_core", "attention_view"}
MODULE_NAMES = sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if m.name not in HELPERS and not m.name.startswith("_"))

ALL_MODULES = [import_module(f"{__name__}.{name}") for name in MODULE_NAMES]
