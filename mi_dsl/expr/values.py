"""Closure builders for checked expressions: each returns `run(env) -> value`.

Types were checked before these are built, so a closure only guards against what
depends on the env: a missing value or service, a failing function, division by
zero. Such a fault becomes an ExpressionError at the node's column; `where` is only
called then, so the happy path does no location work.
"""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, Sequence, Tuple

from lark import Token

from ..errors import ExpressionError, MiError
from ..limits import charge, current
from .env import Fault, need
from .functions import Function

Run = Callable[[Any], Any]

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def unescape(token: Token, where) -> str:
    r"""The value of a string literal; only \" \' \\ \n \t are escapes."""
    body = token.value[1:-1]
    if "\\" not in body:
        return body
    out, index = [], 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escaped = body[index + 1]  # the STRING terminal guarantees a character here
        if escaped not in _ESCAPES:
            shown = escaped if escaped.isprintable() else f"U+{ord(escaped):04X}"
            raise ExpressionError(f"unknown escape '\\{shown}' in a string",
                                  where(token.start_pos + 1 + index),
                                  hint=r"the escapes are \" \' \\ \n \t; write \\ for a backslash")
        out.append(_ESCAPES[escaped])
        index += 2
    return "".join(out)


def constant(value: Any) -> Run:
    return lambda env: value


def lookup(name: str, offset: int, where) -> Run:
    def run(env):
        try:
            return env.values[name]
        except (LookupError, TypeError, AttributeError):
            raise ExpressionError(f"no value was given for '{name}'", where(offset)) from None

    return run


def metric(record: Run, attribute: str, owner: str, offset: int, where) -> Run:
    def run(env):
        metrics = record(env)
        try:
            return metrics[attribute]
        except (LookupError, TypeError):
            raise ExpressionError(f"no value of '{attribute}' was given for '{owner}'", where(offset)) from None

    return run


def any_true(operands: List[Run]) -> Run:
    def run(env):
        for operand in operands:
            if operand(env):
                return True
        return False

    return run


def all_true(operands: List[Run]) -> Run:
    def run(env):
        for operand in operands:
            if not operand(env):
                return False
        return True

    return run


def fold(first: Run, steps: Sequence[Tuple[Callable, Run, int]], where) -> Run:
    """`first op1 x1 op2 x2 ...` left to right; steps are (operator, operand, offset of the operator)."""

    def run(env):
        value = first(env)
        for apply, operand, offset in steps:
            right = operand(env)
            if isinstance(value, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                joined = len(value) + len(right)  # `a + a + ...` on long strings: bounded before joining
                if joined > current().elements:
                    raise ExpressionError(f"joining these makes {joined:,} elements, more than the "
                                          f"{current().elements:,} an expression may make "
                                          "(--limit elements=N raises it)", where(offset))
                charge(1 + joined // 1000)
            try:
                value = apply(value, right)
            except ZeroDivisionError:
                raise ExpressionError("division by zero", where(offset)) from None
            except ArithmeticError:  # e.g. an int too large to turn into a float
                raise ExpressionError("the result is too large to compute", where(offset)) from None
        return value

    return run


def call(function: Function, arguments: List[Run], offset: int, where) -> Run:
    """Call `function` on the arguments' values (after its service, if it has one)."""
    implementation, service, name = function.implementation, function.service, function.name

    def run(env):
        values = [argument(env) for argument in arguments]
        try:
            if service:
                return implementation(need(env, service, f"{name}()"), *values)
            return implementation(*values)
        except MiError:
            raise
        except Fault as fault:
            raise ExpressionError(str(fault), where(offset)) from None
        except Exception as exc:  # noqa: BLE001 - a tokenizer or callback failed: report, keep the cause
            raise ExpressionError(f"{name}() failed: {exc}", where(offset)) from exc

    return run


def as_float(run: Run, offset: int, where) -> Run:
    """Keep a value typed float a float at runtime, even when an int argument won."""

    def converted(env):
        try:
            return float(run(env))
        except OverflowError:
            raise ExpressionError("the result is too large to compute", where(offset)) from None

    return converted


class Record(str):
    """A vocabulary item with fields: the string is its text (what `{country}` renders),
    `fields` its named values (`country.capital`). Equal texts are equal items."""

    __slots__ = ("fields",)

    def __new__(cls, text: str, fields: Mapping[str, Any]):
        item = super().__new__(cls, text)
        item.fields = dict(fields)
        return item

    def __reduce__(self):
        return (Record, (str(self), self.fields))


def field(target: Run, name: str, offset: int, where) -> Run:
    """`record.name`: a field of a vocabulary record, or one slot of a namespace (a mapping)."""

    def run(env):
        value = target(env)
        fields = value.fields if isinstance(value, Record) else value
        try:
            return fields[name]
        except (LookupError, TypeError, AttributeError):
            raise ExpressionError(f"no value of field '{name}' was given for {str(value)!r}", where(offset)) from None

    return run


def subscript(target: Run, index: Run, offset: int, where) -> Run:
    def run(env):
        value, position = target(env), index(env)
        try:
            return value[position]
        except IndexError:
            raise ExpressionError(f"index {position} is out of range: there are {len(value)} elements "
                                  f"(indices 0 to {len(value) - 1}, or -1 to -{len(value)})", where(offset)) from None

    return run


def slice_of(target: Run, start: Run, stop: Run) -> Run:
    def run(env):
        value = target(env)
        piece = value[start(env):stop(env)]
        return str.__str__(piece) if isinstance(piece, str) else piece

    return run


def listing(elements: List[Run], as_tuple: bool) -> Run:
    def run(env):
        values = [element(env) for element in elements]
        return tuple(values) if as_tuple else values

    return run


def choose(condition: Run, yes: Run, no: Run) -> Run:
    return lambda env: yes(env) if condition(env) else no(env)


def contains(item: Run, container: Run, negate: bool) -> Run:
    def run(env):
        found = item(env) in container(env)
        return not found if negate else found

    return run
