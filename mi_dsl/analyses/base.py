"""What every analysis module shares: its result type and the compile helpers.

An analysis class has three methods:
  compile(params, ctx) -> compiler.Step       (no torch: which hooks, which references)
  compute(params, run) -> Result               (imports torch lazily, through `run`)
  figures(result, run) -> [(name, plotly fig)] (imports plotly lazily)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from ..compile.plan import Step


@dataclass
class Result:
    data: Dict[str, Any]                                   # every number, JSON-able
    tables: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # name -> rows
    summary: str = ""                                      # one line for the report


def step(ctx, params: Dict[str, Any], description: str, hooks=(), positions: str = "final",
         depends_on=()) -> Step:
    return Step(id=params.get("id", params["kind"]), kind=params["kind"], description=description,
                hooks=tuple(hooks), positions=positions, depends_on=tuple(depends_on),
                params=tuple(sorted((k, _freeze(v)) for k, v in params.items())))


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_grid_rows(values, name: str) -> List[Dict[str, Any]]:
    """[layer][head] -> table rows."""
    return [{"layer": layer, "head": head, "label": head_label(layer, head), name: float(v)}
            for layer, row in enumerate(values) for head, v in enumerate(row)]


COMPONENT_SPLIT_NOTE = ("Components are read at the final position and scaled by the final "
                        "normalisation of the clean run (the seed's apply_ln_to_stack).")

# What the logit lens and the attributions decompose, stated in their results: the spec's
# metric when it is logit_diff (linear), else what `decompose: logit_diff` asked for.
DECOMPOSED = ("logit_diff: the answer's logit minus the foil's at the final position (for token sets, "
              "the mean logit of each set)")
