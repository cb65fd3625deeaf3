"""A plan step's parameters as compiled: frozen, defaults filled, selectors compiled (no torch).

The compiler turns each analysis's mapping from the spec into `Params` once; the runtime
and `compute` read only that. Lists become tuples and mappings nested `Params`, so the
value kept is unambiguous to thaw (`to_json`); every parameter the analysis's schema part
gives a `default` is present; head and position selectors are `Selection`s: the text as
written, where it stands in the spec, and the compiled selector that the runtime evaluates
(it is never parsed again).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, Mapping, Tuple, Union

from ..expr.compiled import Compiled


@dataclass(frozen=True)
class Selector:
    """One compiled selector: the value as written, its spec path (for located errors) and the
    compiled closure (mi_dsl.expr.Compiled)."""

    value: Any
    path: Tuple[Any, ...]
    compiled: Any = field(compare=False, repr=False)

    @property
    def text(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Selection:
    """A selector parameter: one selector, or a list of them (`listed`)."""

    kind: str                           # "heads" or "positions"
    selectors: Tuple[Selector, ...]
    listed: bool = False
    default: bool = False               # filled in from the analysis's default, not written in the spec

    def __iter__(self) -> Iterator[Selector]:
        return iter(self.selectors)

    def __len__(self) -> int:
        return len(self.selectors)

    def to_json(self):
        values = [s.value for s in self.selectors]
        return values if self.listed else values[0]

    def __str__(self) -> str:
        return str(self.to_json())


class Params(Mapping):
    """An immutable mapping of compiled parameters (hashable, JSON-printable with `to_json`)."""

    __slots__ = ("_items",)
    _items: Dict[str, Any]  # set once in __init__ (object.__setattr__: the instance is frozen)

    def __init__(self, items: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]] = ()):
        object.__setattr__(self, "_items", {k: freeze(v) for k, v in dict(items).items()})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __setattr__(self, name, value):
        raise AttributeError("compiled parameters are frozen")

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items(), key=lambda kv: kv[0])))

    def __eq__(self, other) -> bool:
        return isinstance(other, Params) and self._items == other._items

    def __repr__(self) -> str:
        return f"Params({self.to_json()!r})"

    def replace(self, **changes) -> "Params":
        return Params({**self._items, **changes})

    def to_json(self) -> Dict[str, Any]:
        return {k: thaw(v) for k, v in self._items.items()}


def freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping) and not isinstance(value, Params):
        return Params(value)
    return value


def thaw(value):
    """JSON-able: Params -> dict, tuple -> list, Selection and Compiled -> as written."""
    if isinstance(value, (Params, Selection)):
        return value.to_json()
    if isinstance(value, Compiled):  # a compiled expression (a keep-condition): as written
        return value.text
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def with_defaults(params: Mapping[str, Any], schema_properties: Mapping[str, Any]) -> Dict[str, Any]:
    """The spec's parameters plus every schema default they leave out (top level)."""
    out = dict(params)
    for key, prop in schema_properties.items():
        if key not in out and isinstance(prop, Mapping) and "default" in prop:
            out[key] = prop["default"]
    return out
