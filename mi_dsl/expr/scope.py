"""Static types and the Scope an expression is checked against.

Types are plain strings: "str", "int", "float", "bool", "token" (a token id),
"record" (clean/corrupted: metric name -> float), "heads" and "positions".
Which names and functions exist depends on where the expression is written, so each
context has a factory: `Scope.filter()`, `.template(slots)`, `.answer(slots, paired)`,
`.keep(metrics)`, `.heads(analyses)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Optional

TYPES = ("str", "int", "float", "bool", "token", "tokens", "record", "heads", "positions")
NUMBERS = ("int", "float")

_STRING_FUNCTIONS = frozenset({"lower", "upper", "capitalize", "strip", "len"})
_NUMBER_FUNCTIONS = frozenset({"abs", "min", "max"})
_TOKEN_FUNCTIONS = frozenset({"ntokens", "first_token"})
_ANSWER_FUNCTIONS = frozenset({"first_tokens", "number_tokens", "to_int"})
# opposite() is offered even when no slot is paired, so using it explains what is missing.
_SLOT_FUNCTIONS = frozenset({"opposite"})
HEAD_FUNCTIONS = frozenset({"top", "bottom", "top_abs"})

_TYPE_WORDS = {"num": "int or float", "bool": "bool (true/false)", "token": "token (a token id)",
               "tokens": "tokens (a token set)"}


def describe_type(type_: str) -> str:
    """How a type reads in a message: 'num' becomes 'int or float'."""
    return _TYPE_WORDS.get(type_, type_)


@dataclass(frozen=True)
class Scope:
    names: Mapping[str, str]  # name -> type
    functions: frozenset  # function names allowed here
    context: str = "this expression"  # how messages name the place: "a vocabulary filter"
    name_kind: str = "name"  # how messages call a name: "slot", "record"
    paired_slots: frozenset = frozenset()  # slots whose vocabulary is a list of opposite pairs
    metrics: frozenset = frozenset()  # attributes of records
    analyses: Optional[frozenset] = None  # what top()/bottom() may rank; None: not checked here

    @classmethod
    def filter(cls, name: str = "item") -> "Scope":
        """A vocabulary filter: `ntokens(" " + item) == 2`."""
        functions = _STRING_FUNCTIONS | _NUMBER_FUNCTIONS | _TOKEN_FUNCTIONS
        return cls(_frozen({name: "str"}), functions, "a vocabulary filter")

    @classmethod
    def template(cls, slots: Iterable[str], paired_slots: Iterable[str] = ()) -> "Scope":
        """A slot transform inside a template: `{lower(noun)}`, `{opposite(descriptor)}`."""
        functions = _STRING_FUNCTIONS | _NUMBER_FUNCTIONS | _SLOT_FUNCTIONS
        return cls(_frozen(dict.fromkeys(slots, "str")), functions, "a template", "slot", frozenset(paired_slots))

    @classmethod
    def answer(cls, slots: Iterable[str], paired_slots: Iterable[str] = ()) -> "Scope":
        """An answer or foil: `first_token(" " + opposite(descriptor))`."""
        functions = _STRING_FUNCTIONS | _NUMBER_FUNCTIONS | _TOKEN_FUNCTIONS | _ANSWER_FUNCTIONS | _SLOT_FUNCTIONS
        return cls(_frozen(dict.fromkeys(slots, "str")), functions, "an answer", "slot", frozenset(paired_slots))

    @classmethod
    def keep(cls, metric_names: Iterable[str], records: Iterable[str] = ("clean", "corrupted")) -> "Scope":
        """A keep condition: `clean.logit_diff > 3 and corrupted.logit_diff < -3`."""
        names = _frozen(dict.fromkeys(records, "record"))
        return cls(names, _NUMBER_FUNCTIONS, "a keep condition", "record", metrics=frozenset(metric_names))

    @classmethod
    def heads(cls, analyses: Optional[Iterable[str]] = None) -> "Scope":
        """A head selector: `top(head_attr, 12)`; `analyses=None` leaves the name to the caller."""
        known = None if analyses is None else frozenset(analyses)
        return cls(_frozen({}), HEAD_FUNCTIONS, "a head selector", "analysis", analyses=known)


def _frozen(names: dict) -> Mapping[str, str]:
    return MappingProxyType(dict(names))

