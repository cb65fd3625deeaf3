"""Static types and the Scope an expression is checked against.

Types are plain strings: "str", "int", "float", "bool", "token" (a token id),
"continuation" (an answer's ordered token sequence: continuation(...); never a set or a list),
"record" (clean/corrupted: metric name -> float), "heads" and "positions"; lists are
"list[str]", "list[int]", "list[float]", "list[bool]", and a list of token ids is
"tokens". A slot bound to a vocabulary of records has the type "rec:VOCAB": it stands
for its text wherever a string is expected, and `slot.field` reads a field (the fields'
types are in `Scope.records`). "ns:corrupted" is the corrupted prompt's slot values,
read in answers as `corrupted.SLOT`.
Which names and functions exist depends on where the expression is written, so each
context has a factory: `Scope.filter()`, `.template(slots)`, `.answer(slots, paired)`,
`.keep(metrics)`, `.heads(analyses)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, Optional

from .functions import in_groups

TYPES = ("str", "int", "float", "bool", "token", "tokens", "continuation", "record", "heads", "positions")
NUMBERS = ("int", "float")
SCALARS = ("str", "int", "float", "bool")

# Which functions a context offers is by their group (expr/functions.py), read when the Scope is made,
# so a function a plugin registers is offered wherever its group is. opposite() ("slot") is offered
# even when no slot is paired, so using it explains what is missing.
HEAD_FUNCTIONS = frozenset({"top", "bottom", "top_abs"})  # the selectors' own parser knows these

_TYPE_WORDS = {"num": "int or float", "bool": "bool (true/false)", "token": "token (a token id)",
               "tokens": "tokens (a token set)",
               "continuation": "a continuation (an ordered token sequence, continuation(...))"}


def describe_type(type_: str) -> str:
    """How a type reads in a message: 'num' becomes 'int or float'."""
    if is_record(type_):
        return f"a record of vocabulary '{type_[4:]}'"
    if type_.startswith("ns:"):
        return f"the {type_[3:]} prompt's slot values"
    if type_.startswith("list["):
        return f"a list of {describe_type(type_[5:-1])}"
    if type_ == "tokens":
        return "a token list"
    return _TYPE_WORDS.get(type_, type_)


def is_record(type_: str) -> bool:
    """A vocabulary record: has fields and stands for its text where a string is expected."""
    return type_.startswith("rec:")


def as_text(type_: str) -> str:
    """A record read as a string is its text."""
    return "str" if is_record(type_) else type_


def list_of(element: str) -> str:
    return "tokens" if element == "token" else f"list[{as_text(element)}]"


def element_of(type_: str):
    """The element type of a list type (None when `type_` is not a list)."""
    if type_ == "tokens":
        return "token"
    return type_[5:-1] if type_.startswith("list[") else None


def unify(left: str, right: str):
    """One type for two values that may stand in one place (a list, the arms of `if`), or None."""
    if left == right:
        return left
    if left in NUMBERS and right in NUMBERS:
        return "float"
    if as_text(left) == as_text(right) == "str":
        return "str"
    a, b = element_of(left), element_of(right)
    if a is not None and b is not None and unify(a, b) is not None and a != "token" and b != "token":
        return list_of(unify(a, b))
    return None


@dataclass(frozen=True)
class Scope:
    names: Mapping[str, str]  # name -> type
    functions: frozenset  # function names allowed here
    context: str = "this expression"  # how messages name the place: "a vocabulary filter"
    name_kind: str = "name"  # how messages call a name: "slot", "record"
    paired_slots: frozenset = frozenset()  # slots whose vocabulary is a list of opposite pairs
    metrics: frozenset = frozenset()  # attributes of records
    analyses: Optional[frozenset] = None  # what top()/bottom() may rank; None: not checked here
    records: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # "rec:V"/"ns:X" -> field -> type

    @classmethod
    def filter(cls, name: str = "item", record: Optional[str] = None,
               records: Optional[Mapping[str, Mapping[str, str]]] = None) -> "Scope":
        """A vocabulary filter: `ntokens(" " + item) == 2`, `item.gender == "female"`."""
        functions = in_groups("string", "number", "token")
        return cls(_frozen({name: record or "str"}), functions, "a vocabulary filter",
                   records=_frozen(records or {}))

    @classmethod
    def template(cls, slots: Iterable[str], paired_slots: Iterable[str] = (),
                 records: Optional[Mapping[str, Mapping[str, str]]] = None, context: str = "a template",
                 tokens: bool = False) -> "Scope":
        """A slot transform inside a template: `{lower(noun)}`, `{opposite(descriptor)}`,
        `{country.capital}`. `slots` is a list of names (strings) or a mapping name -> type."""
        functions = in_groups("string", "number", "slot", *(("token",) if tokens else ()))
        return cls(_slot_types(slots), functions, context, "slot", frozenset(paired_slots),
                   records=_frozen(records or {}))

    @classmethod
    def answer(cls, slots: Iterable[str], paired_slots: Iterable[str] = (),
               records: Optional[Mapping[str, Mapping[str, str]]] = None) -> "Scope":
        """An answer or foil: `first_token(" " + opposite(descriptor))`."""
        functions = in_groups("string", "number", "token", "answer", "slot")
        return cls(_slot_types(slots), functions, "an answer", "slot", frozenset(paired_slots),
                   records=_frozen(records or {}))

    @classmethod
    def keep(cls, metric_names: Iterable[str], records: Iterable[str] = ("clean", "corrupted")) -> "Scope":
        """A keep condition: `clean.logit_diff > 3 and corrupted.logit_diff < -3`."""
        names = _frozen(dict.fromkeys(records, "record"))
        return cls(names, in_groups("number"), "a keep condition", "record", metrics=frozenset(metric_names))

    @classmethod
    def heads(cls, analyses: Optional[Iterable[str]] = None) -> "Scope":
        """A head selector: `top(head_attr, 12)`; `analyses=None` leaves the name to the caller."""
        known = None if analyses is None else frozenset(analyses)
        return cls(_frozen({}), HEAD_FUNCTIONS, "a head selector", "analysis", analyses=known)


def _frozen(names: dict) -> Mapping[str, str]:
    return MappingProxyType(dict(names))


def _slot_types(slots) -> Mapping[str, str]:
    if isinstance(slots, Mapping):
        return _frozen(slots)
    return _frozen(dict.fromkeys(slots, "str"))

