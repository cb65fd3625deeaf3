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

# Which metrics an analysis reads, and why: a key of METRIC_RULES ("any", "none", "linear", "gradient").
MetricsRule = Literal["any", "none", "linear", "gradient"]
# What it reads of the answers: "final" (tokens at the final position: refused for continuation(...)
# answers), "any" (measures any metric, continuation metrics included), "none" (no metric: it reads no
# answer, or shows one and handles a continuation itself).
Answers = Literal["final", "any", "none"]

# Where the registry finds the built-in analyses: importing the package registers them. Discovery by
# name, as a plugin system does, so the registry (read by the compiler) imports no analysis code.
BUILTIN_PLUGINS = ("mi_dsl.analyses",)


@dataclass(frozen=True)
class MetricRule:
    """Which metrics an analysis reads and why: the compiler's refusals, the `direction` parameter
    and the reference doc's table are all read from here (one rule, written once)."""

    accepts: str            # in words, for the reference doc and `mi-run list`
    why: str                # the reason, quoted by a refusal
    needs_linear: bool      # a metric not linear in the final residual is refused ...
    readout: bool           # ... unless `direction: logit_diff` names the linear read-out instead
    needs_gradient: bool    # a metric without a gradient (rank) is refused


METRIC_RULES: Dict[str, MetricRule] = {
    "any": MetricRule("every metric", "it measures the metric itself on each patched or ablated run",
                      False, False, False),
    "none": MetricRule("none (it reads no metric)", "it reads no metric", False, False, False),
    "linear": MetricRule(
        "metrics linear in the final residual (logit_diff); any other with `direction: logit_diff`",
        "it splits the metric into parts that add up to it, which holds only for a metric linear in the final "
        "residual; `direction: logit_diff` reads the answer-minus-foil logit difference instead (the parts then "
        "add up to that)", True, True, False),
    "gradient": MetricRule(
        "every metric with a gradient (all but rank); one not linear in the final residual is linearised too",
        "it estimates each effect to first order from the metric's gradient: exact only where the metric is "
        "linear in the patched activation; a metric not linear in the final residual (prob, prob_diff, logprob, "
        "the continuation_* metrics, metric expressions) is linearised along with the model, which the result's "
        "convention says; rank is a count with no gradient", False, False, True),
}




def linearised_note(metric) -> str:
    """What a gradient estimate's convention adds for a metric not linear in the final residual (the
    continuation metrics state their own)."""
    if metric.linear or metric.reads_continuation:
        return ""
    return (f" The metric '{metric.name}' is not linear in the final residual, so the estimate linearises it "
            "along with the model (compare with exact activation_patching).")


@dataclass(frozen=True)
class AnalysisKind:
    kind: str
    description: str
    params: Type[AnalysisParams]       # its typed parameters: the schema, the compiled step parameters
    implementation: Any                # the registered class (compile, compute, figures; files optional)
    needs_pairs: bool = False          # needs clean/corrupted pairs (patching, ablation by resampling)
    needs_dataset: bool = True         # False: runs on its own inputs (head detection)
    metrics: MetricsRule = "any"       # which metrics it reads and why (METRIC_RULES)
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
    def metric_rule(self) -> MetricRule:
        return METRIC_RULES[self.metrics]

    @property
    def decomposes(self) -> bool:
        """It reads the metric as parts, so a non-linear metric needs `direction: logit_diff`."""
        return self.metric_rule.readout

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
             needs_pairs: bool = False, needs_dataset: bool = True, metrics: MetricsRule = "any",
             answers: Answers = "final", reads_final: str = "", continuation_instead: str = "",
             alignment: Optional[Callable[..., Any]] = None, graph_bytes_per_row: Optional[Callable[..., int]] = None,
             per_head: bool = False) -> Callable:
    """Class decorator registering an analysis kind with its parameters and capabilities."""

    def register(cls):
        if kind in REGISTRY:
            raise ValueError(f"analysis kind '{kind}' is registered twice")
        if not (isinstance(params, type) and issubclass(params, AnalysisParams)):
            raise TypeError(f"analysis '{kind}': params must be an AnalysisParams dataclass (core/typed.py)")
        if answers not in ("final", "any", "none"):
            raise ValueError(f"analysis '{kind}': answers={answers!r} is not final, any or none")
        if metrics not in METRIC_RULES:
            raise ValueError(f"analysis '{kind}': metrics={metrics!r} is not one of {', '.join(METRIC_RULES)}")
        if METRIC_RULES[metrics].readout and "direction" not in params.schema_properties():
            raise TypeError(f"analysis '{kind}' decomposes the metric: its params derive from DecompositionParams "
                            "(the `direction` a non-linear metric is read on)")
        REGISTRY[kind] = AnalysisKind(kind, description, params, cls, needs_pairs, needs_dataset, metrics,
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
