"""The analysis registry: every fact the framework needs about an analysis kind, declared once.

An analysis is one module with a class registered by `@analysis(...)` (analyses/ holds the
built-in ones; a plugin module registers the same way). The registration says what the kind
is — its typed parameters (core/typed.py) and its capabilities — and the framework reads these
fields, never the kind's name: the schema, the compiler's metric and answer checks, the
alignment of clean and corrupted prompts, the memory estimate, prompt-index checks and the
sweep's per-head comparisons all ask the registration.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Literal, Optional, Type

from ..suggest import unknown
from .typed import AnalysisParams

# How an analysis reads the spec's metric:
#   "any"        it measures the metric itself (exact runs): any metric;
#   "decomposes" it splits the metric into parts that add up to it: exact only for a metric linear in the
#                final residual, so another metric needs `direction: logit_diff` (DecompositionParams);
#   "linearises" it takes a first-order (gradient) estimate of the metric: a differentiable metric, and the
#                estimate's convention says what it linearises.
ReadsMetric = Literal["any", "decomposes", "linearises"]
# What it reads of the answers: "final" (tokens at the final position: refused for continuation(...)
# answers), "any" (measures any metric, continuation metrics included), "none" (no metric: it reads no
# answer, or shows one and handles a continuation itself).
Answers = Literal["final", "any", "none"]

# Where the registry finds the built-in analyses: importing the package registers them. Discovery by
# name, as a plugin system does, so the registry (read by the compiler) imports no analysis code.
BUILTIN_PLUGINS = ("mi_dsl.analyses",)


@dataclass(frozen=True)
class AnalysisKind:
    kind: str
    description: str
    params: Type[AnalysisParams]       # its typed parameters: the schema, the compiled step parameters
    implementation: Any                # the registered class (compile, compute, figures; files optional)
    needs_pairs: bool = False          # needs clean/corrupted pairs (patching, ablation by resampling)
    needs_dataset: bool = True         # False: runs on its own inputs (head detection)
    reads_metric: ReadsMetric = "any"
    answers: Answers = "final"
    reads_final: str = ""              # answers="final": what it reads at the final position (quoted when a
    continuation_instead: str = ""     # continuation is refused), and what measures a continuation instead
    # fn(spec, index, params, pairs): refuses (located) clean/corrupted prompts it cannot align (their
    # lengths, positions); returns what the runtime needs to align them (or None). None: reads clean only.
    alignment: Optional[Callable[..., Any]] = None
    # fn(shape, tokens) -> bytes per row of a forward kept for a backward (every block's saved tensors);
    # None: its forwards keep no graph. The plan's memory estimate and the executor's batches read it.
    graph_bytes_per_row: Optional[Callable[..., int]] = None
    per_head: bool = False             # its result has a `per_head` [layer][head] table: top() ranks it, sweeps
    #                                    compare it across points

    @property
    def decomposes(self) -> bool:
        return self.reads_metric == "decomposes"

    def schema(self) -> Dict[str, Any]:
        props = self.params.schema_properties()
        props["kind"] = {**props["kind"], "const": self.kind}
        return {
            "type": "object",
            "description": self.description,
            "properties": props,
            "required": self.params.required(),
            "additionalProperties": False,
        }


REGISTRY: Dict[str, AnalysisKind] = {}


def analysis(kind: str, description: str, params: Type[AnalysisParams] = AnalysisParams, *,
             needs_pairs: bool = False, needs_dataset: bool = True, reads_metric: ReadsMetric = "any",
             answers: Answers = "final", reads_final: str = "", continuation_instead: str = "",
             alignment: Optional[Callable[..., Any]] = None, graph_bytes_per_row: Optional[Callable[..., int]] = None,
             per_head: bool = False) -> Callable:
    """Class decorator registering an analysis kind with its parameters and capabilities."""

    def register(cls):
        if kind in REGISTRY:
            raise ValueError(f"analysis kind '{kind}' is registered twice")
        if not (isinstance(params, type) and issubclass(params, AnalysisParams)):
            raise TypeError(f"analysis '{kind}': params must be an AnalysisParams dataclass (core/typed.py)")
        if answers not in ("final", "any", "none") or reads_metric not in ("any", "decomposes", "linearises"):
            raise ValueError(f"analysis '{kind}': answers={answers!r} / reads_metric={reads_metric!r} unknown")
        if reads_metric == "decomposes" and "direction" not in params.schema_properties():
            raise TypeError(f"analysis '{kind}' decomposes the metric: its params derive from DecompositionParams "
                            "(the `direction` a non-linear metric is read on)")
        REGISTRY[kind] = AnalysisKind(kind, description, params, cls, needs_pairs, needs_dataset, reads_metric,
                                      answers, reads_final, continuation_instead, alignment, graph_bytes_per_row,
                                      per_head)
        cls.kind = kind
        return cls

    return register


def get(kind: str) -> AnalysisKind:
    load_all()
    if kind not in REGISTRY:
        raise KeyError(unknown("analysis kind", kind, REGISTRY))
    return REGISTRY[kind]


def load_all() -> Dict[str, AnalysisKind]:
    """Import the built-in analyses (cheap: they import torch only when computing); a plugin module
    imported before the spec compiles registers its own the same way."""
    for name in BUILTIN_PLUGINS:
        importlib.import_module(name)
    return REGISTRY
