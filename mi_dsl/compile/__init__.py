"""The compile stage: Spec (+ Dataset) -> Plan, plain frozen data (no torch).

prepare (the entry every command shares) -> compiler (pipeline and analysis steps) ->
plan (the data types), summary (what `mi-run plan` prints).
"""
from ..core.plan import Plan, Step
from .prepare import Prepared, prepare

__all__ = ["Plan", "Prepared", "Step", "prepare"]
