"""Type-check an expression tree against a Scope and turn it into one closure.

Every node becomes `Typed(type, run)`, where `run(env)` computes the node's value.
All checking happens here, once; evaluating is then plain Python calls, with no
dispatch on node kinds and no re-parsing. Runtime faults (a missing value, division
by zero) are raised as ExpressionError at the column of the node that failed.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, List

from lark import Token, Tree

from ..errors import ExpressionError
from ..suggest import unknown
from . import values
from .compiled import Compiled, Where, default_where
from .functions import FUNCTIONS, Function
from .parser import offset_of, parse
from .scope import (HEAD_FUNCTIONS, NUMBERS, SCALARS, Scope, as_text, describe_type, element_of,
                    list_of, unify)
from .syntax_errors import KEYWORDS_READ_AS_NAMES, keyword_misuse

_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
               "//": operator.floordiv, "%": operator.mod}
_COMPARISONS = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@dataclass(frozen=True)
class Typed:
    type: str
    run: Callable[[Any], Any]


def compile_expression(text: Any, scope: Scope, where: Where = default_where) -> Compiled:
    """Parse and type-check `text` in `scope`; evaluate the result later with `.evaluate(env)`."""
    tree = parse(text, "expression", where)
    checker = Checker(scope, where)
    body = tree.children[0]
    typed = checker.check(body)
    return Compiled(
        text=str(text), type=typed.type, evaluate=typed.run, where=where, offset=offset_of(body),
        names=frozenset(checker.names), functions=frozenset(checker.functions),
        metrics=frozenset(checker.metrics),
    )


class Checker:
    """One method per tree node kind (`_sum` handles Tree('sum')), as in a lark Transformer."""

    def __init__(self, scope: Scope, where: Where):
        self.scope = scope
        self.where = where
        self.names: set = set()
        self.functions: set = set()
        self.metrics: set = set()

    def check(self, node: Tree) -> Typed:
        return getattr(self, f"_{node.data}")(node)

    def error(self, message: str, node, hint: str = "") -> ExpressionError:
        return ExpressionError(message, self.where(offset_of(node)), hint)

    # --- literals and names -------------------------------------------------

    def _int_literal(self, node: Tree) -> Typed:
        return Typed("int", values.constant(int(node.children[0])))

    def _float_literal(self, node: Tree) -> Typed:
        number = float(node.children[0])
        if math.isinf(number):
            raise self.error(f"the number {node.children[0]} is too large", node)
        return Typed("float", values.constant(number))

    def _string_literal(self, node: Tree) -> Typed:
        return Typed("str", values.constant(values.unescape(node.children[0], self.where)))

    def _true_literal(self, node: Tree) -> Typed:
        return Typed("bool", values.constant(True))

    def _false_literal(self, node: Tree) -> Typed:
        return Typed("bool", values.constant(False))

    def _name(self, node: Tree) -> Typed:
        name = str(node.children[0])
        if name in KEYWORDS_READ_AS_NAMES:
            raise self.error(keyword_misuse(name), node)
        if name not in self.scope.names:
            hint = f"to call the function, write {name}(...)" if name in FUNCTIONS else ""
            raise self.error(unknown(self.scope.name_kind, name, self.scope.names), node, hint)
        self.names.add(name)
        return Typed(self.scope.names[name], values.lookup(name, offset_of(node), self.where))

    def _attribute(self, node: Tree) -> Typed:
        target, attribute = node.children
        record = self.check(target)
        if record.type in self.scope.records:
            return self._field(target, record, attribute)
        if record.type != "record":
            records = ", ".join(n for n, t in self.scope.names.items() if t == "record" or t in self.scope.records)
            where_records = f"only records ({records}) have" if records else "nothing here has"
            raise self.error(f"'.{attribute}' needs a record, but this is {describe_type(record.type)}; "
                             f"{where_records} attributes", attribute)
        if attribute not in self.scope.metrics:
            raise self.error(unknown("metric", str(attribute), self.scope.metrics), attribute)
        owner = str(target.children[0]) if target.data == "name" else "the record"
        self.metrics.add((owner, str(attribute)))
        return Typed("float", values.metric(record.run, str(attribute), owner, attribute.start_pos, self.where))

    def _field(self, target, record: Typed, attribute: Token) -> Typed:
        fields = self.scope.records[record.type]
        name = str(attribute)
        if name not in fields:
            owner = f"'{target.children[0]}'" if target.data == "name" else "this record"
            what = "slot" if record.type.startswith("ns:") else "field"
            hint = ("a field of a record is one of the keys its vocabulary's items are written with"
                    if what == "field" else "")
            raise self.error(unknown(what, name, sorted(fields), f"of {owner}"), attribute, hint)
        return Typed(fields[name], values.field(record.run, name, attribute.start_pos, self.where))

    def _index_op(self, node: Tree) -> Typed:
        target_node, index_node = node.children
        target = self._sequence(target_node, "[i]")
        index = self._integer(index_node, "an index")
        element = "str" if as_text(target.type) == "str" else element_of(target.type)
        return Typed(element, values.subscript(target.run, index.run, offset_of(index_node), self.where))

    def _slice_op(self, node: Tree) -> Typed:
        target_node, start_node, _colon, stop_node = node.children
        target = self._sequence(target_node, "[i:j]")
        bounds = [values.constant(None) if n is None else self._integer(n, "a slice bound").run
                  for n in (start_node, stop_node)]
        return Typed(as_text(target.type), values.slice_of(target.run, *bounds))

    def _sequence(self, node, form: str) -> Typed:
        typed = self.check(node)
        if as_text(typed.type) != "str" and element_of(typed.type) is None:
            raise self.error(f"'{form}' needs a list, a token list or a string, but this is "
                             f"{describe_type(typed.type)}", node)
        return typed

    def _integer(self, node, what: str) -> Typed:
        typed = self.check(node)
        if typed.type != "int":
            raise self.error(f"{what} must be an int, but this is {describe_type(typed.type)}", node,
                             "convert with int(...)" if typed.type in ("str", "float") else "")
        return typed

    def _list_literal(self, node: Tree) -> Typed:
        arguments = node.children[0]
        if arguments is None:
            raise self.error("an empty list [] has no element type; write at least one element", node)
        elements = [self.check(child) for child in arguments.children]
        element = elements[0].type
        for child, typed in zip(arguments.children[1:], elements[1:]):
            joined = unify(element, typed.type)
            if joined is None or element_of(joined) is not None or joined in ("heads", "positions"):
                raise self.error(f"a list holds values of one type: this is {describe_type(typed.type)}, "
                                 f"the first element {describe_type(element)}", child)
            element = joined
        if element_of(element) is not None or element.startswith(("ns:", "record")) or element == "continuation":
            hint = ("a continuation is one ordered answer; a token set of alternatives is first_tokens(\"...|...\")"
                    if element == "continuation" else "")
            raise self.error(f"a list cannot hold {describe_type(element)}", arguments.children[0], hint)
        runs = [typed.run if element != "float" else values.as_float(typed.run, 0, self.where) for typed in elements]
        return Typed(list_of(element), values.listing(runs, as_tuple=element == "token"))

    def _conditional(self, node: Tree) -> Typed:
        yes_node, _if, condition_node, _else, no_node = node.children
        yes = self.check(yes_node)
        condition = self._boolean(condition_node, "the condition after 'if' must be true/false, but")
        no = self.check(no_node)
        joined = unify(yes.type, no.type)
        if joined is None:
            raise self.error(f"both sides of 'if ... else' must give one type: {describe_type(yes.type)} "
                             f"before 'if', {describe_type(no.type)} after 'else'", no_node)
        yes_run, no_run = yes.run, no.run
        if joined == "float":
            yes_run, no_run = (values.as_float(r, 0, self.where) for r in (yes_run, no_run))
        return Typed(joined, values.choose(condition.run, yes_run, no_run))

    def _membership(self, node: Tree) -> Typed:
        return self._contains(node.children[0], node.children[-1], node.children[1], negate=False)

    def _non_membership(self, node: Tree) -> Typed:
        return self._contains(node.children[0], node.children[-1], node.children[1], negate=True)

    def _contains(self, item_node, container_node, keyword, negate: bool) -> Typed:
        item, container = self.check(item_node), self.check(container_node)
        element = element_of(container.type)
        if as_text(container.type) == "str":
            element = "str"  # a substring
        if element is None:
            raise self.error(f"'in' needs a list, a token list or a string on its right, but this is "
                             f"{describe_type(container.type)}", container_node)
        joined = unify(as_text(item.type), element)
        if joined is None or element_of(joined) is not None:  # a list is not looked for inside a list
            raise self.error(f"cannot look for {describe_type(item.type)} in {describe_type(container.type)}",
                             keyword)
        return Typed("bool", values.contains(item.run, container.run, negate))

    # --- operators ----------------------------------------------------------

    def _or_test(self, node: Tree) -> Typed:
        return Typed("bool", values.any_true(self._booleans(node, "or")))

    def _and_test(self, node: Tree) -> Typed:
        return Typed("bool", values.all_true(self._booleans(node, "and")))

    def _not_op(self, node: Tree) -> Typed:
        operand = self._boolean(node.children[1], "'not' needs true/false, but")
        run = operand.run
        return Typed("bool", lambda env: not run(env))

    def _booleans(self, node: Tree, keyword: str) -> List[Callable]:
        operands = node.children[::2]
        return [self._boolean(child, f"'{keyword}' needs true/false on both sides, but").run for child in operands]

    def _boolean(self, node: Tree, prefix: str) -> Typed:
        typed = self.check(node)
        if typed.type != "bool":
            raise self.error(f"{prefix} this is {describe_type(typed.type)}", node,
                             "compare it to get true/false, e.g. with ==, < or >")
        return typed

    def _comparison(self, node: Tree) -> Typed:
        left_node, op, right_node = node.children
        left, right = self.check(left_node), self.check(right_node)
        self._check_comparable(op, left.type, right.type)
        compare, run_left, run_right = _COMPARISONS[str(op)], left.run, right.run
        return Typed("bool", lambda env: compare(run_left(env), run_right(env)))

    def _check_comparable(self, op: Token, left: str, right: str) -> None:
        left, right = as_text(left), as_text(right)
        if "record" in (left, right):
            raise self.error("records cannot be compared; compare a metric, e.g. clean.logit_diff > 3", op)
        same = left == right or (left in NUMBERS and right in NUMBERS)
        if not same:
            raise self.error(f"cannot compare {describe_type(left)} with {describe_type(right)}", op)
        if not same and element_of(left) and element_of(right):
            same = unify(left, right) is not None
        if str(op) not in ("==", "!=") and left not in NUMBERS and left != "str":
            raise self.error(f"'{op}' does not apply to {describe_type(left)} values; use == or !=", op)

    def _sum(self, node: Tree) -> Typed:
        return self._arithmetic(node)

    def _product(self, node: Tree) -> Typed:
        return self._arithmetic(node)

    def _arithmetic(self, node: Tree) -> Typed:
        """A flat chain `a + b - c`: typed left to right, evaluated in one loop."""
        first = self.check(node.children[0])
        result, steps = first.type, []
        for op, operand_node in zip(node.children[1::2], node.children[2::2]):
            operand = self.check(operand_node)
            result = self._arithmetic_type(op, result, operand.type)
            steps.append((_ARITHMETIC[str(op)], operand.run, op.start_pos))
        return Typed(result, values.fold(first.run, steps, self.where))

    def _arithmetic_type(self, op: Token, left: str, right: str) -> str:
        if str(op) == "+" and as_text(left) == as_text(right) == "str":
            return "str"
        if left in NUMBERS and right in NUMBERS:
            return "int" if left == right == "int" and str(op) != "/" else "float"
        got = f"got {describe_type(left)} and {describe_type(right)}"
        if str(op) == "+":
            raise self.error(f"'+' joins two strings or adds two numbers; {got}", op)
        raise self.error(f"'{op}' needs numbers on both sides; {got}", op)

    def _negate(self, node: Tree) -> Typed:
        operand = self.check(node.children[1])
        if operand.type not in NUMBERS:
            raise self.error(f"'-' needs a number, but this is {describe_type(operand.type)}", node.children[1])
        run = operand.run
        return Typed(operand.type, lambda env: -run(env))

    # --- calls --------------------------------------------------------------

    def _call(self, node: Tree) -> Typed:
        name_token, arguments = node.children
        function = self._function(name_token)
        argument_nodes = arguments.children if arguments is not None else []
        self._check_arity(function, argument_nodes, node)
        runs, types = [], []
        if function.field and len(argument_nodes) == 1:  # opposite(x) is x.opposite for any such record
            typed = self.check(argument_nodes[0])
            fields = self.scope.records.get(typed.type, {})
            if function.field in fields:
                self.functions.add(function.name)
                return Typed(fields[function.field], values.field(typed.run, function.field, offset_of(node),
                                                                  self.where))
        for position, (param, argument) in enumerate(zip(function.params, argument_nodes), start=1):
            if param == "slot":
                runs += self._slot_argument(function, argument)
                continue
            typed = self._argument(function, param, argument, position)
            runs.append(typed.run)
            types.append(typed.type)
        self.functions.add(function.name)
        run = values.call(function, runs, offset_of(node), self.where)
        if function.result != "num":
            return Typed(function.result, run)
        if all(t == "int" for t in types):
            return Typed("int", run)
        return Typed("float", values.as_float(run, offset_of(node), self.where))  # min(2, 3.5) is 2.0

    def _function(self, name_token: Token) -> Function:
        name = str(name_token)
        if name in self.scope.functions and name in FUNCTIONS:
            return FUNCTIONS[name]
        available = sorted(self.scope.functions)
        if name in HEAD_FUNCTIONS:
            raise self.error(f"{name}() selects heads and can only be used in a head selector", name_token)
        if name in FUNCTIONS:
            raise self.error(f"{name}() is not available in {self.scope.context}", name_token,
                             "available here: " + ", ".join(f"{f}()" for f in available))
        raise self.error(unknown("function", name, available), name_token)

    def _check_arity(self, function: Function, arguments: list, node: Tree) -> None:
        if len(arguments) != len(function.params):
            count = len(function.params)
            plural = "argument" if count == 1 else "arguments"
            raise self.error(f"{function.name}() expects {count} {plural} ({', '.join(function.params)}), "
                             f"got {len(arguments)}", node)

    def _argument(self, function: Function, param: str, node: Tree, position: int) -> Typed:
        typed = self.check(node)
        if not _accepts(param, typed.type):
            which = f" as argument {position}" if len(function.params) > 1 else ""
            raise self.error(f"{function.name}() expects {_PARAM_WORDS.get(param) or describe_type(param)}{which}, "
                             f"got {describe_type(typed.type)}", node)
        return typed

    def _slot_argument(self, function: Function, node: Tree) -> List[Callable]:
        """opposite(descriptor): the slot's name and its value, both passed on."""
        if not (isinstance(node, Tree) and node.data == "name"):
            raise self.error(f"{function.name}() needs a word of a vocabulary of opposite pairs (a paired slot, "
                             f"corrupted.SLOT, or a pairs vocabulary's item), e.g. {function.name}(descriptor)", node)
        slot = str(node.children[0])
        typed = self._name(node)
        if slot not in self.scope.paired_slots:
            paired = ", ".join(sorted(self.scope.paired_slots)) or "none"
            kind = "slot " if self.scope.name_kind == "slot" else ""
            raise self.error(f"{kind}'{slot}' has no opposite pairs, so {function.name}({slot}) has no meaning",
                             node, f"{function.name}() needs a word of a vocabulary that is a list of pairs "
                             f"(paired slots here: {paired})")
        return [values.constant(slot), typed.run]



_PARAM_WORDS = {"scalar": "a string, number or true/false", "sized": "a string or a list"}


def _accepts(param: str, type_: str) -> bool:
    if param == "num":
        return type_ in NUMBERS
    if param == "scalar":
        return as_text(type_) in SCALARS
    if param == "sized":
        return as_text(type_) == "str" or element_of(type_) is not None
    return as_text(type_) == param
