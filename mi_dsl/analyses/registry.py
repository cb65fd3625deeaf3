"""The analysis registry: one module per analysis kind, registered by decorator.

Each analysis module declares its schema part (the JSON Schema properties of its
parameters), a one-line description, how it compiles into a plan step (which hooks
it needs), how it computes (lazily importing torch) and its figures. The registry's
names and schema parts feed the spec's JSON Schema, so registering a module is all
it takes to add an analysis to the language.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..suggest import unknown

# Parameters every analysis accepts.
COMMON_PARAMS: Dict[str, Any] = {
    "kind": {"type": "string", "description": "Which analysis to run (see `mi-run list`)."},
    "id": {
        "type": "string",
        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
        "description": "Name of this analysis's result, for references such as top(ID, 12); defaults to the kind.",
    },
    "title": {"type": "string", "description": "Title shown on the report and figures."},
    "max_pairs": {"type": "integer", "minimum": 1,
                  "description": "Run this analysis on the first N prompt pairs of the final dataset only "
                                 "(bounds the cost of exact patching on a CPU); its baselines are those N "
                                 "pairs' means."},
}


@dataclass(frozen=True)
class AnalysisKind:
    kind: str
    description: str
    params: Dict[str, Any]
    required: List[str]
    implementation: Any  # the registered class; instantiated per run
    needs_pairs: bool = False  # needs clean/corrupted pairs (patching, ablation by resampling)
    needs_dataset: bool = True  # False: runs on its own inputs (head detection)
    # Which metrics it reads, and why: a key of METRIC_RULES ("any", "linear", "gradient", "none")
    metrics: str = "any"
    # What it reads of the answers: "final" (tokens at the final position: refused for continuation(...)
    # answers at compile time), "any" (measures any metric, continuation metrics included), "none" (no
    # metric: it reads no answer, or shows one and handles a continuation itself, as predictions does)
    answers: str = "final"
    # answers="final" only, said when a continuation is refused: what it reads at the final position,
    # and what measures a continuation instead (both optional)
    reads_final: str = ""
    continuation_instead: str = ""

    @property
    def metric_rule(self) -> "MetricRule":
        return METRIC_RULES[self.metrics]

    def schema(self) -> Dict[str, Any]:
        props = dict(COMMON_PARAMS)
        props["kind"] = {**COMMON_PARAMS["kind"], "const": self.kind}
        props.update(self.params)
        return {
            "type": "object",
            "description": self.description,
            "properties": props,
            "required": ["kind", *self.required],
            "additionalProperties": False,
        }


# A decomposition reads the metric as a sum of parts, exact only for a metric that is linear in
# the final residual. For another metric the spec must name the linear direction to read instead.
DIRECTION_PARAM: Dict[str, Any] = {
    "type": "string", "enum": ["logit_diff"],
    "description": "The direction the parts are read on when the spec's metric is not linear in the final "
                   "residual (prob, prob_diff, logprob, rank): `logit_diff`, the answer-minus-foil logit "
                   "difference (mean logits for token sets); the parts then add up to it, not to the metric. "
                   "Default: the spec's metric, which must then be linear.",
}

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


REGISTRY: Dict[str, AnalysisKind] = {}


def analysis(kind: str, description: str, params: Optional[Dict[str, Any]] = None,
             required: Optional[List[str]] = None, needs_pairs: bool = False,
             needs_dataset: bool = True, metrics: str = "any", answers: str = "final",
             reads_final: str = "", continuation_instead: str = "") -> Callable:
    """Class decorator registering an analysis kind."""

    def register(cls):
        if kind in REGISTRY:
            raise ValueError(f"analysis kind '{kind}' is registered twice")
        params_ = dict(params or {})
        if metrics not in METRIC_RULES:
            raise ValueError(f"analysis '{kind}': metrics={metrics!r} is not one of {', '.join(METRIC_RULES)}")
        if METRIC_RULES[metrics].readout:
            params_.setdefault("direction", DIRECTION_PARAM)
        if answers not in ("final", "any", "none"):
            raise ValueError(f"analysis '{kind}': answers={answers!r} is not final, any or none")
        REGISTRY[kind] = AnalysisKind(kind, description, params_, required or [], cls,
                                      needs_pairs, needs_dataset, metrics, answers, reads_final,
                                      continuation_instead)
        cls.kind = kind
        return cls

    return register


def get(kind: str) -> AnalysisKind:
    load_all()
    if kind not in REGISTRY:
        raise KeyError(unknown("analysis kind", kind, REGISTRY))
    return REGISTRY[kind]


def load_all() -> Dict[str, AnalysisKind]:
    """Import every analysis module (cheap: they import torch only when computing)."""
    from . import ALL_MODULES  # noqa: F401  (importing registers them)

    return REGISTRY
