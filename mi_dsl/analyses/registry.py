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
    decomposes: bool = False  # splits the metric into parts linearly: needs a linear metric (metrics.py)
    # What it reads of the answers: "final" (tokens at the final position: refused for continuation(...)
    # answers at compile time), "any" (measures any metric, continuation metrics included), "none" (no
    # metric: it reads no answer, or shows one and handles a continuation itself, as predictions does)
    answers: str = "final"
    # answers="final" only, said when a continuation is refused: what it reads at the final position,
    # and what measures a continuation instead (both optional)
    reads_final: str = ""
    continuation_instead: str = ""

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

REGISTRY: Dict[str, AnalysisKind] = {}


def analysis(kind: str, description: str, params: Optional[Dict[str, Any]] = None,
             required: Optional[List[str]] = None, needs_pairs: bool = False,
             needs_dataset: bool = True, decomposes: bool = False, answers: str = "final",
             reads_final: str = "", continuation_instead: str = "") -> Callable:
    """Class decorator registering an analysis kind."""

    def register(cls):
        if kind in REGISTRY:
            raise ValueError(f"analysis kind '{kind}' is registered twice")
        params_ = dict(params or {})
        if decomposes and kind != "attribution_patching":  # its `direction` is denoising/noising
            params_.setdefault("direction", DIRECTION_PARAM)
        if answers not in ("final", "any", "none"):
            raise ValueError(f"analysis '{kind}': answers={answers!r} is not final, any or none")
        REGISTRY[kind] = AnalysisKind(kind, description, params_, required or [], cls,
                                      needs_pairs, needs_dataset, decomposes, answers, reads_final,
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
