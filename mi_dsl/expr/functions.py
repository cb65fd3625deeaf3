"""The functions an expression may call: one registry, one entry per function.

Parameter kinds: "str" (a record passes as its text), "int", "num" (int or float),
"scalar" (str, int, float or bool), "sized" (a string or a list), "slot" (a bare name of
a paired slot) and "analysis" (a bare name of an earlier analysis). A result of "num" is int
when every numeric argument is int, else float. A function with a `service` gets
that attribute of the evaluation env (e.g. the tokenizer) as its first argument.
Implementations raise `Fault` with a short fact; the call site adds the column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from .env import Fault


@dataclass(frozen=True)
class Function:
    name: str
    params: Tuple[str, ...]
    result: str
    description: str
    implementation: Callable
    service: str = ""  # env attribute passed first: "tokenizer", "opposite"
    # where it may be called (expr/scope.py): "string" and "number" everywhere but keep-conditions read
    # numbers only; "token" needs the tokenizer (filters, answers); "answer" builds answer sets;
    # "slot" reads a slot's pairing; "head" ranks heads (head selectors only)
    group: str = "string"

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)}) -> {self.result}"


FUNCTIONS: Dict[str, Function] = {}


GROUPS = ("string", "number", "token", "answer", "slot", "head")


def function(name: str, params: Tuple[str, ...], result: str, description: str, service: str = "",
             group: str = "string"):
    """Register an expression function (a plugin module adds one the same way): the checker types
    its calls where its `group` is offered (expr/scope.py), the evaluator runs it, `mi-run list`
    and the reference list it."""
    if group not in GROUPS:
        raise ValueError(f"expression function '{name}': group {group!r} is not one of {GROUPS}")

    def add(implementation: Callable) -> Callable:
        if name in FUNCTIONS:
            raise ValueError(f"expression function '{name}' is registered twice")
        FUNCTIONS[name] = Function(name, params, result, description, implementation, service, group)
        return implementation

    return add


# The built-ins' groups, in one table (a plugin passes group= itself).
_BUILTIN_GROUPS = {
    **dict.fromkeys(("lower", "upper", "capitalize", "strip", "len", "int", "float", "str"), "string"),
    **dict.fromkeys(("abs", "min", "max"), "number"),
    **dict.fromkeys(("ntokens", "first_token", "tokens"), "token"),
    **dict.fromkeys(("first_tokens", "number_tokens", "to_int", "continuation"), "answer"),
    "opposite": "slot",
    **dict.fromkeys(("top", "bottom", "top_abs"), "head"),
}


def _register(name: str, params: Tuple[str, ...], result: str, description: str, service: str = ""):
    return function(name, params, result, description, service, _BUILTIN_GROUPS[name])


def in_groups(*groups: str) -> frozenset:
    """The names of the registered functions of these groups (read when a Scope is made)."""
    return frozenset(name for name, f in FUNCTIONS.items() if f.group in groups)


def describe_functions() -> List[Tuple[str, str, str]]:
    """(name, signature, description) of every function, for `mi-run list`."""
    return [(f.name, f.signature, f.description) for f in sorted(FUNCTIONS.values(), key=lambda f: f.name)]


@_register("ntokens", ("str",), "int", "number of tokens of the string (no special tokens)", "tokenizer")
def _ntokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text))


@_register("first_token", ("str",), "token", "id of the string's first token (no special tokens)", "tokenizer")
def _first_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text)
    if not ids:
        raise Fault(f"first_token({text!r}): the string has no tokens")
    return ids[0]


@_register("first_tokens", ("str",), "tokens",
           "a token set: the first token of each '|'-separated alternative, e.g. first_tokens(\" she| her\")",
           "tokenizer")
def _first_tokens(tokenizer, text: str) -> Tuple[int, ...]:
    return _token_set(tokenizer, text.split("|"), f"first_tokens({text!r})")


@_register("number_tokens", ("str", "int", "int"), "tokens",
           "a token set: the first token of prefix + n for every integer lo <= n < hi, e.g. "
           "number_tokens(\"\", 5, 10) is the digits 5 to 9", "tokenizer")
def _number_tokens(tokenizer, prefix: str, low: int, high: int) -> Tuple[int, ...]:
    return _token_set(tokenizer, [prefix + str(n) for n in range(low, high)],
                      f"number_tokens({prefix!r}, {low}, {high})")


def _token_set(tokenizer, texts: List[str], call: str) -> Tuple[int, ...]:
    if not texts:
        raise Fault(f"{call} is an empty token set")
    out: List[int] = []
    for text in texts:
        ids = tokenizer.encode(text)
        if not ids:
            raise Fault(f"{call}: {text!r} has no tokens")
        if ids[0] not in out:
            out.append(ids[0])
    return tuple(out)


@_register("to_int", ("str",), "int", "the integer a string of digits spells, e.g. to_int(\"07\") is 7")
def _to_int(text: str) -> int:
    if not text.strip().lstrip("+-").isdigit():
        raise Fault(f"to_int({text!r}): not an integer")
    return int(text)


_register("lower", ("str",), "str", "the string in lower case")(str.lower)
_register("upper", ("str",), "str", "the string in upper case")(str.upper)
_register("strip", ("str",), "str", "the string without leading and trailing white space")(str.strip)
_register("len", ("sized",), "int", "number of characters of a string, or of elements of a list")(len)


@_register("tokens", ("str",), "tokens",
           "the string's token ids, a token list (no special tokens); as an answer or foil a token list is a "
           "token SET read at the final position (each token one alternative next token), not a sequence: "
           "write continuation(...) for a multi-token answer", "tokenizer")
def _tokens(tokenizer, text: str) -> tuple:
    return tuple(tokenizer.encode(text))


@_register("continuation", ("str",), "continuation",
           "an answer or foil that is a multi-token continuation of the prompt, its tokens in order, e.g. "
           "continuation(\" \" + country.capital) for \" Buenos Aires\"; read by the continuation_* metrics "
           "(teacher-forced log-probability summed over its tokens). The string is tokenized on its own "
           "(no special tokens), as first_token does", "tokenizer")
def _continuation(tokenizer, text: str) -> tuple:
    ids = tuple(tokenizer.encode(text))
    if not ids:
        raise Fault(f"continuation({text!r}): the string has no tokens, and a continuation needs at least one")
    return ids


@_register("int", ("scalar",), "int", "a number or a string of digits as an integer (a float is truncated), "
                                      "e.g. int(\"07\") is 7")
def _int(value) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit():
            raise Fault(f"int({value!r}): the string is not an integer")
        return int(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise Fault(f"int({value}): not a finite number")
    return int(value)


@_register("float", ("scalar",), "float", "a number or a numeric string as a float")
def _float(value) -> float:
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise Fault(f"float({value!r}): the string is not a number") from None


@_register("str", ("scalar",), "str", "a value as a string (true/false for truth values; a record's text)")
def _str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str.__str__(value) if isinstance(value, str) else str(value)


@_register("capitalize", ("str",), "str", "the string with its first character in upper case (the rest unchanged)")
def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


@_register("opposite", ("slot",), "str", "the partner of the slot's word in its list of opposite pairs", "opposite")
def _opposite(pairs: Callable[[str, str], str], slot: str, word: str) -> str:
    try:
        partner = pairs(slot, word)
    except LookupError:
        partner = None
    if not isinstance(partner, str):
        raise Fault(f"'{word}' has no opposite in the pairs of slot '{slot}'")
    return partner


_register("abs", ("num",), "num", "absolute value")(abs)
_register("min", ("num", "num"), "num", "the smaller of two numbers")(min)
_register("max", ("num", "num"), "num", "the larger of two numbers")(max)


def _ranked(table, count: int, key: Callable[[float], float]) -> List[Tuple[int, int]]:
    """The `count` (layer, head) cells with the smallest key; ties go to the lower layer, then head."""
    cells = []
    for layer, row in enumerate(table):
        for head, score in enumerate(row):
            score = float(score)
            if math.isnan(score):
                raise Fault(f"the score of L{layer}H{head} is NaN, so heads cannot be ranked")
            cells.append((key(score), layer, head))
    cells.sort()
    return [(layer, head) for _, layer, head in cells[:count]]


@_register("top", ("analysis", "int"), "heads",
           "the n heads with the largest signed scores, largest first (a large negative score "
           "ranks last; head selectors only)")
def _top(table, count: int) -> List[Tuple[int, int]]:
    return _ranked(table, count, lambda score: -score)


@_register("bottom", ("analysis", "int"), "heads",
           "the n heads with the smallest signed scores, most negative first (head selectors only)")
def _bottom(table, count: int) -> List[Tuple[int, int]]:
    return _ranked(table, count, lambda score: score)


@_register("top_abs", ("analysis", "int"), "heads",
           "the n heads with the largest absolute scores, either sign, largest first (head selectors only)")
def _top_abs(table, count: int) -> List[Tuple[int, int]]:
    return _ranked(table, count, lambda score: -abs(score))
