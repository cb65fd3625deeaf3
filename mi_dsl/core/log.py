"""The run log: what running a plan returns, frozen and versioned.

`runtime.run.execute` returns a `RunLog`; the report, `mi_dsl.Results` and
results.json all read it, and nothing writes to it after the run. Its JSON form is
results.json (the same keys as before the log existed, plus `format_version`, `status`
and `plan`), so a run directory can be read back (`RunLog.from_json`) without torch.

    format_version   RUN_LOG_VERSION; a reader refuses a newer one
    status           "complete"
    spec             {file, name, hash}
    plan             the compiled plan as data (pipeline, analyses with hooks and positions)
    dataset          candidates, vocabularies, pipeline stages, final pairs, example pairs
                     token by token (with answer, foil and slot spans)
    metric, baselines, per_prompt, candidate_metrics
    analyses         analysis id -> {kind, summary, convention?, pairs_used, ...its data}
    tables           analysis id -> {table name -> rows}  (also written as CSV)
    timings, forward_passes, store, provenance
    threads          torch's CPU threads and why (runtime/threads.py)
    shared_passes    each shared final-position pass: id, analyses, forwards it ran
    warnings         located messages, `FILE:LINE:COL: warning: ...`

Figures are not numbers: they travel beside the log (`RunLog.figures`), are written
as HTML and plotly JSON by the report, and are not part of its JSON form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import RunError

RUN_LOG_VERSION = 1
_FIELDS = ("format_version", "status", "spec", "plan", "dataset", "metric", "baselines", "per_prompt",
           "candidate_metrics", "analyses", "tables", "timings", "forward_passes", "store", "provenance",
           "warnings", "threads", "shared_passes")


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain data (dicts and lists) from frozen data."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """JSON cannot hold NaN or inf: they are written as null (the report shows them as such)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class RunLog:
    format_version: int
    status: str
    spec: Mapping[str, Any]
    plan: Mapping[str, Any]
    dataset: Mapping[str, Any]
    metric: str
    baselines: Mapping[str, float]
    per_prompt: Mapping[str, Any]
    candidate_metrics: Mapping[str, Any]
    analyses: Mapping[str, Mapping[str, Any]]
    tables: Mapping[str, Mapping[str, Tuple]]
    timings: Mapping[str, float]
    forward_passes: int
    store: Mapping[str, Any]
    provenance: Mapping[str, Any]
    warnings: Tuple[str, ...]
    threads: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # runtime/threads.py's choice
    shared_passes: Tuple[Mapping[str, Any], ...] = ()   # each shared pass: id, analyses, forwards
    figures: Mapping[str, Tuple[Tuple[str, Any], ...]] = field(default_factory=lambda: MappingProxyType({}),
                                                               compare=False, repr=False)
    # analysis id -> {relative path: text}: files an analysis writes into the run directory (MIB export)
    files: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}),
                                                   compare=False, repr=False)

    @classmethod
    def build(cls, figures: Optional[Dict[str, list]] = None, files: Optional[Dict[str, Dict[str, str]]] = None,
              **parts: Any) -> "RunLog":
        frozen = {name: freeze(parts[name]) for name in _FIELDS}
        figs = MappingProxyType({k: tuple(v) for k, v in (figures or {}).items()})
        extra = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in (files or {}).items()})
        return cls(**frozen, figures=figs, files=extra)

    def to_json(self) -> Dict[str, Any]:
        """The log as plain data (results.json), without the figures."""
        return {name: thaw(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def from_json(cls, data: Dict[str, Any], figures: Optional[Dict[str, list]] = None) -> "RunLog":
        version = data.get("format_version")
        if version is None:
            raise RunError("this results.json has no format_version: it was written by an mi-dsl older than "
                           "the run log; rerun the spec")
        if version > RUN_LOG_VERSION:
            raise RunError(f"this results.json has run-log format {version}; this mi-dsl reads up to "
                           f"{RUN_LOG_VERSION}", hint="upgrade mi-dsl")
        return cls.build(figures, **{name: data.get(name, [] if name == "shared_passes" else {})
                                     for name in _FIELDS})
