"""Head selectors (L8H2, L10H*, L*H3, top(head_attr, 12)) and position selectors
(final, 16, -1, noun, noun[0], noun#2[-1]).

Both compile once into a closure; ranges are checked when evaluating, because only
then are the model's size and the prompt's tokens known.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, Union

from lark import Token, Tree

from ..errors import ExpressionError, MiError
from ..suggest import unknown
from .compiled import Compiled, Where, default_where
from .env import Fault, need
from .functions import FUNCTIONS, Function
from .parser import POSITION_WORDS, offset_of, parse
from .scope import HEAD_FUNCTIONS, Scope

_HEAD = re.compile(r"L(\d+|\*)H(\d+|\*)")


def parse_heads(text: Any, analyses: Optional[Iterable[str]] = None, where: Where = default_where) -> Compiled:
    """Compile a head selector; `analyses` are the names top()/bottom() may rank by (None: any)."""
    tree = parse(text, "heads", where)
    node = tree.children[0]
    if tree.data == "head_literal":
        return _compiled(text, "heads", _literal_heads(node), node, where)
    return _ranking(text, node, Scope.heads(analyses), where)


def parse_positions(
    text: Any, slots: Union[Iterable[str], Mapping[str, int]], where: Where = default_where
) -> Compiled:
    """Compile a position selector; `slots` are the template's slot names, or a mapping
    slot -> number of occurrences in the template (then noun#3 is checked now)."""
    tree = parse(text, "positions", where)
    if tree.data == "final_position":
        return _compiled(text, "positions", _final, tree, where)
    if tree.data == "absolute_position":
        return _compiled(text, "positions", _absolute(_signed(tree.children[0])), tree, where)
    name, occurrence, index = _slot_parts(tree, slots, where)
    select = _slot(str(name), occurrence, index)
    return _compiled(text, "positions", select, tree, where, names=frozenset({str(name)}))


def _compiled(text, type_: str, select: Callable, node, where: Where, **uses) -> Compiled:
    return Compiled(text=str(text), type=type_, evaluate=_guarded(select, offset_of(node), where),
                    where=where, offset=offset_of(node), **uses)


def _guarded(select: Callable, offset: int, where: Where) -> Callable:
    """Faults become ExpressionErrors at the selector's column (or the fault's own)."""

    def run(env):
        try:
            return select(env)
        except MiError:
            raise
        except Fault as fault:
            raise ExpressionError(str(fault), where(offset if fault.offset is None else fault.offset)) from None
        except Exception as exc:  # noqa: BLE001 - a malformed env or a failing callback
            raise ExpressionError(f"could not evaluate the selector: {exc}", where(offset)) from exc

    return run


# --- heads ------------------------------------------------------------------------


def _literal_heads(token: Token) -> Callable:
    layer_text, head_text = _HEAD.fullmatch(token.value).groups()
    layer = None if layer_text == "*" else int(layer_text)
    head = None if head_text == "*" else int(head_text)

    def select(env) -> List[Tuple[int, int]]:
        n_layers, n_heads = _model_size(env)
        layers = range(n_layers) if layer is None else [_checked(layer, n_layers, "layer", "layers")]
        heads = range(n_heads) if head is None else [_checked(head, n_heads, "head", "heads per layer")]
        return [(l, h) for l in layers for h in heads]

    return select


def _model_size(env) -> Tuple[int, int]:
    return need(env, "n_layers", "a head selector"), need(env, "n_heads", "a head selector")


def _checked(number: int, count: int, what: str, unit: str) -> int:
    if number >= count:
        raise Fault(f"{what} {number} is out of range: the model has {count} {unit} (0 to {count - 1})")
    return number


def _ranking(text, call: Tree, scope: Scope, where: Where) -> Compiled:
    """top(head_attr, 12): checked now, ranked when the analysis has run."""
    name_token, arguments = call.children
    function = _head_function(name_token, where)
    nodes = arguments.children if arguments is not None else []
    if len(nodes) != 2:
        raise ExpressionError(f"{function.name}() expects 2 arguments (analysis, int), got {len(nodes)}",
                              where(offset_of(call)), hint=f"e.g. {function.name}(head_attr, 12)")
    analysis = _analysis_name(function, nodes[0], scope, where)
    count = _count(function, nodes[1], where)
    select = _ranked(function, analysis, count, offset_of(nodes[0]), offset_of(nodes[1]))
    return _compiled(text, "heads", select, call, where, functions=frozenset({function.name}),
                     analyses=((analysis, offset_of(nodes[0])),))


def _head_function(name_token: Token, where: Where) -> Function:
    name = str(name_token)
    if name in HEAD_FUNCTIONS:
        return FUNCTIONS[name]
    message = (f"{name}() cannot select heads; use top(), bottom() or top_abs()" if name in FUNCTIONS
               else unknown("function", name, HEAD_FUNCTIONS))
    raise ExpressionError(message, where(name_token.start_pos))


def _analysis_name(function: Function, node, scope: Scope, where: Where) -> str:
    if not (isinstance(node, Tree) and node.data == "name"):
        raise ExpressionError(f"{function.name}() takes the name of an analysis as argument 1, "
                              f"e.g. {function.name}(head_attr, 12)", where(offset_of(node)))
    name = str(node.children[0])
    if scope.analyses is not None and name not in scope.analyses:
        hint = "" if scope.analyses else "no earlier analysis gives per-head scores"
        raise ExpressionError(unknown("analysis", name, scope.analyses), where(offset_of(node)), hint)
    return name


def _count(function: Function, node, where: Where) -> int:
    literal = node.children[-1] if isinstance(node, Tree) and node.data == "negate" else node
    if not (isinstance(literal, Tree) and literal.data == "int_literal"):
        raise ExpressionError(f"{function.name}() takes a whole number of heads as argument 2, "
                              f"e.g. {function.name}(head_attr, 12)", where(offset_of(node)))
    count = int(literal.children[0]) * (-1 if literal is not node else 1)
    if count < 1:
        raise ExpressionError(f"{function.name}() needs at least 1 head, got {count}", where(offset_of(node)))
    return count


def _ranked(function: Function, analysis: str, count: int, analysis_offset: int, count_offset: int) -> Callable:
    def select(env) -> List[Tuple[int, int]]:
        n_layers, n_heads = _model_size(env)
        if count > n_layers * n_heads:
            raise Fault(f"{function.name}({analysis}, {count}) asks for {count} heads, "
                        f"but the model has only {n_layers * n_heads}", count_offset)
        table = _scores(env, function, analysis, n_layers, n_heads, analysis_offset)
        try:
            return function.implementation(table, count)
        except (TypeError, ValueError) as exc:
            raise Fault(f"analysis '{analysis}' gave a score that is not a number ({exc})", analysis_offset) from None

    return select


def _scores(env, function: Function, analysis: str, n_layers: int, n_heads: int, offset: int):
    """The analysis's [layer][head] table, checked against the model's size."""
    table = need(env, "result", f"{function.name}()")(analysis)
    try:
        shape = (len(table), {len(row) for row in table})
    except TypeError:
        raise Fault(f"analysis '{analysis}' did not give a table of scores per layer and head", offset) from None
    if shape != (n_layers, {n_heads}):
        raise Fault(f"analysis '{analysis}' gave {shape[0]} rows of {sorted(shape[1])} scores, but the model "
                    f"has {n_layers} layers of {n_heads} heads", offset)
    return table


# --- positions --------------------------------------------------------------------


def _final(env) -> List[int]:
    n_tokens = need(env, "n_tokens", "a position selector")
    if n_tokens < 1:
        raise Fault("the prompt has no tokens, so it has no final position")
    return [n_tokens - 1]


def _signed(node: Tree) -> int:
    return -int(node.children[-1]) if len(node.children) == 2 else int(node.children[0])


def _absolute(position: int) -> Callable:
    def select(env) -> List[int]:
        n_tokens = need(env, "n_tokens", "a position selector")
        resolved = position + n_tokens if position < 0 else position
        if not 0 <= resolved < n_tokens:
            raise Fault(f"position {position} is out of range: the prompt has {n_tokens} tokens "
                        f"(0 to {n_tokens - 1}, or -{n_tokens} to -1)")
        return [resolved]

    return select


def _slot_parts(tree: Tree, slots, where: Where):
    """(name token, (occurrence, offset), (index, offset) or None), checked against the slots."""
    name, *suffixes = tree.children
    if str(name) not in slots:
        raise ExpressionError(unknown("slot", str(name), set(slots) | POSITION_WORDS), where(name.start_pos))
    occurrence, index = (1, None), None
    for suffix in suffixes:
        if suffix.data == "occurrence":
            occurrence = (int(suffix.children[1]), suffix.children[1].start_pos)
        else:
            index = (_signed(suffix.children[0]), offset_of(suffix.children[0]))
    _check_occurrence(str(name), occurrence, slots, where)
    return name, occurrence, index


def _check_occurrence(name: str, occurrence: Tuple[int, int], slots, where: Where) -> None:
    number, offset = occurrence
    if number < 1:
        raise ExpressionError(f"occurrences count from 1: {name}#1 is the first '{name}'", where(offset))
    if isinstance(slots, Mapping) and number > slots[name]:
        raise ExpressionError(f"{name}#{number} does not exist: the template has {slots[name]} "
                              f"occurrence(s) of '{name}'", where(offset))


def _slot(name: str, occurrence: Tuple[int, int], index: Optional[Tuple[int, int]]) -> Callable:
    number, occurrence_offset = occurrence
    label = name if number == 1 else f"{name}#{number}"

    def select(env) -> List[int]:
        spans = need(env, "slot_spans", "a position selector").get(name)
        if not spans:
            raise Fault(f"slot '{name}' does not occur in this prompt")
        if number > len(spans):
            raise Fault(f"{label} does not exist: this prompt has {len(spans)} occurrence(s) of '{name}'",
                        occurrence_offset)
        start, end = spans[number - 1]
        if index is None:
            return list(range(start, end))
        position, index_offset = index
        if not -(end - start) <= position < end - start:
            raise Fault(f"{label}[{position}] is out of range: '{name}' has {end - start} token(s) here",
                        index_offset)
        return [start + position if position >= 0 else end + position]

    return select
