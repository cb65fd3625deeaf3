"""Analyses: one module per kind. Importing this package registers them all.

To add an analysis, write one module here with an `@analysis(...)` class and list it
in ALL_MODULES (see README, "Extending").
"""
from importlib import import_module

MODULE_NAMES = ["predictions", "logit_lens", "layer_attribution", "head_attribution"]

ALL_MODULES = [import_module(f"{__name__}.{name}") for name in MODULE_NAMES]
