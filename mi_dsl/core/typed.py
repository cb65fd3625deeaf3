"""Typed step parameters: one frozen dataclass per analysis kind (no torch).

An analysis declares its parameters once, as a dataclass of `param(...)` fields:

    @dataclass(frozen=True, kw_only=True)
    class HeadAttributionParams(AnalysisParams):
        top_k: int = param(12, "Heads in the bar chart of largest contributions.", minimum=1)

The field's type gives the JSON-Schema type (int, float, bool, str, Literal[...] -> enum,
Tuple[X, ...] -> array, Optional[X] -> X, not required), its keywords the rest (minimum,
maximum, minItems, ...), its default the schema's `default`; `schema=` gives a fragment the
type cannot say (a selector, a nested mapping). The spec's JSON Schema, the reference doc and
editor completion are generated from these classes (`schema_properties`, `required`); the
compiler builds one instance per step (`from_spec`: defaults filled, lists frozen to tuples,
mappings to `Params`), the analysis's `compile` turns selector fields into `Selection`s, and
`compute` reads attributes — never string keys.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass, fields  # noqa: F401  (MISSING: a required parameter)
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

from .params import Selection, freeze, thaw

# A selector parameter: as the spec wrote it (a string or a list of strings) until the
# analysis's compile compiles it, a Selection after (compile/params.py).
SelectorValue = Union[str, int, Tuple[Union[str, int], ...], Selection, None]


def param(default: Any = MISSING, description: str = "", *, schema: Optional[Dict[str, Any]] = None,
          key: Optional[str] = None, **keywords: Any) -> Any:
    """A parameter field: its default (none: required), its description for the reference and the
    editor, JSON-Schema keywords added to what its type says (`minimum=1`), or the whole `schema`;
    `key`: the spec's name for it when that is not a Python name (`from`)."""
    if not description:
        raise TypeError("every parameter has a description (the reference and editors show it)")
    metadata = {"description": description, "schema": schema, "keywords": keywords, "key": key}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class StepParams:
    """What a plan step computes with: frozen, hashable, JSON-printable (`to_json`)."""

    def to_json(self) -> Dict[str, Any]:
        """The parameters as `mi-run plan --json` prints them, by the spec's names (absent optional ones
        left out)."""
        return {spec_key(f): thaw(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def spec_key(cls, name: str) -> str:
        """The spec's name of the field `name`."""
        return next(spec_key(f) for f in fields(cls) if f.name == name)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    def selections(self) -> Dict[str, Selection]:
        """The compiled selector parameters, by name."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), Selection)}

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> Any:
        """An instance from the spec's mapping (checked by the schema): the given values frozen,
        the defaults of the rest."""
        by_key = {spec_key(f): f.name for f in fields(cls)}
        unknown = sorted(set(raw) - set(by_key))
        if unknown:  # the schema refuses these first; reaching here is a declaration out of step
            raise TypeError(f"{cls.__name__} has no parameter(s) {unknown}")
        return cls(**{by_key[k]: freeze(v) for k, v in raw.items()})

    @classmethod
    def schema_properties(cls) -> Dict[str, Dict[str, Any]]:
        """Each parameter's JSON-Schema fragment, from its type, keywords, default and description."""
        hints = typing.get_type_hints(cls)
        out: Dict[str, Dict[str, Any]] = {}
        for f in fields(cls):
            if "description" not in f.metadata:
                continue  # not a spec parameter (the common ones are declared on the base class)
            fragment = dict(f.metadata["schema"]) if f.metadata["schema"] is not None else json_type(hints[f.name])
            fragment.update(f.metadata["keywords"])
            if f.default is not MISSING and f.default is not None:
                fragment["default"] = thaw(f.default)
            fragment["description"] = f.metadata["description"]
            out[spec_key(f)] = fragment
        return out

    @classmethod
    def required(cls) -> List[str]:
        return [spec_key(f) for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                and "description" in f.metadata]


def spec_key(f: "dataclasses.Field") -> str:
    return (f.metadata.get("key") if f.metadata else None) or f.name


def json_type(tp: Any) -> Dict[str, Any]:
    """The JSON-Schema fragment of a parameter's Python type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is Literal:
        kinds = sorted({simple[type(a)] for a in args})
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(args)}
    if origin is Union:
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            return json_type(present[0])
        parts = [json_type(a) for a in present]
        if all(set(p) == {"type"} for p in parts):
            return {"type": [p["type"] for p in parts]}
        return {"anyOf": parts}
    if origin in (tuple, Tuple) and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": json_type(args[0])}
    raise TypeError(f"no JSON-Schema type for {tp!r}: give the parameter a `schema=`")


@dataclass(frozen=True, kw_only=True)
class AnalysisParams(StepParams):
    """The parameters every analysis accepts; a kind's own class adds its fields."""

    kind: str = param(MISSING, "Which analysis to run (see `mi-run list`).")
    id: Optional[str] = param(None, "Name of this analysis's result, for references such as top(ID, 12); "
                                    "defaults to the kind.", pattern="^[A-Za-z_][A-Za-z0-9_]*$")
    title: Optional[str] = param(None, "Title shown on the report and figures.")
    max_pairs: Optional[int] = param(None, "Run this analysis on the first N prompt pairs of the final dataset "
                                           "only (bounds the cost of exact patching on a CPU); its baselines are "
                                           "those N pairs' means.", minimum=1)

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> Any:
        made = super().from_spec(raw)
        return made if made.id is not None else dataclasses.replace(made, id=made.kind)

    @property
    def name(self) -> str:
        """The result's id (the kind unless the spec names it)."""
        return self.id or self.kind

    def prompt_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        """(spec path under the analysis, value) of each parameter that indexes the dataset's final
        prompts, so validate refuses an index the pipeline cannot leave (none by default)."""
        return []

    def layer_indices(self) -> List[Tuple[Tuple[Any, ...], int]]:
        """(spec path under the analysis, value) of each parameter that names a layer, checked against
        the model's shape (none by default)."""
        return []


@dataclass(frozen=True, kw_only=True)
class DecompositionParams(AnalysisParams):
    """An analysis that reads the metric as a sum of parts (exact only for a metric linear in the
    final residual) may be told the linear direction to read instead."""

    direction: Optional[Literal["logit_diff"]] = param(
        None, "The direction the parts are read on when the spec's metric is not linear in the final residual "
              "(prob, prob_diff, logprob, rank): `logit_diff`, the answer-minus-foil logit difference (mean "
              "logits for token sets); the parts then add up to it, not to the metric. Default: the spec's "
              "metric, which must then be linear.")


def heads_schema() -> Dict[str, Any]:
    """A head selector: one string or a list of them (L9H9, L10H*, top(head_attr, 12), ...)."""
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}


def positions_schema() -> Dict[str, Any]:
    """A position selector: final, -1, a slot, a slot's token (name[-1]); or a list of them."""
    one = {"type": ["string", "integer"]}
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}


# ------------------------------------------------------------------ the pipeline's steps


@dataclass(frozen=True, kw_only=True)
class KeepParams(StepParams):
    condition: Any                 # the compiled keep-condition (an expr.Compiled; printed as written)
    metrics: Tuple[str, ...]       # the registered metrics it reads (the plan computes them)


@dataclass(frozen=True, kw_only=True)
class SampleParams(StepParams):
    n: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class SymmetricParams(StepParams):
    enabled: bool
