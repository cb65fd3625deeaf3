"""Fuzz: whatever text reaches an expression entry point, the only failure is ExpressionError.

Compiling and, when that succeeds, evaluating are both covered, on arbitrary text and
on text assembled from the grammar's own tokens (which reaches far deeper).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_dsl.errors import ExpressionError
from mi_dsl.expr import MAX_LENGTH, Env, Scope, compile_expression, parse_heads, parse_positions


class CharacterTokenizer:
    def encode(self, text):
        return [ord(c) for c in text]


SLOTS = ["item", "noun", "descriptor"]
SCOPES = [
    Scope.filter(),
    Scope.template(SLOTS),
    Scope.answer(SLOTS, paired_slots=["descriptor"]),
    Scope.keep(["logit_diff", "prob"]),
]
EXPRESSION_ENV = Env(
    values={"item": "Dogs", "noun": "cat", "descriptor": "hot",
            "clean": {"logit_diff": 4.0, "prob": 0.5}, "corrupted": {"logit_diff": -1.0}},
    tokenizer=CharacterTokenizer(),
    opposite=lambda slot, word: {"hot": "cold"}[word],
)
SELECTOR_ENV = Env(
    n_layers=3, n_heads=2, result=lambda name: [[0.5, -1.0], [2.0, 0.0], [0.25, 1.5]],
    n_tokens=9, slot_spans={"noun": [(1, 3), (5, 6)], "item": [(7, 7)]},
)

TOKENS = [
    "item", "noun", "descriptor", "clean", "corrupted", "head_attr", "x", "final", "last",
    "0", "1", "2", "-1", "16", "3.5", "1e3", "9" * 30, '"a"', "' '", '"\\n"', '"\\q"', '"', "'",
    "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "=", "!", "&&",
    "and", "or", "not", "true", "false", "(", ")", ",", ".", "[", "]", "#",
    "ntokens", "first_token", "lower", "upper", "capitalize", "strip", "len", "opposite",
    "abs", "min", "max", "top", "bottom", "top_abs", "logit_diff", "prob",
    "L0H1", "L2H*", "L*H1", "L*H*", "L9H9",
]
token_text = st.lists(st.sampled_from(TOKENS), max_size=24).flatmap(
    lambda tokens: st.sampled_from([" ".join(tokens), "".join(tokens)]))
any_text = st.one_of(st.text(max_size=120), token_text)


def only_expression_errors(call, *args) -> None:
    try:
        call(*args)
    except ExpressionError:
        pass


def compile_and_run_everywhere(text) -> None:
    for scope in SCOPES:
        only_expression_errors(lambda s: compile_expression(text, s).evaluate(EXPRESSION_ENV), scope)
    only_expression_errors(lambda: parse_heads(text, ["head_attr"]).evaluate(SELECTOR_ENV))
    only_expression_errors(lambda: parse_positions(text, SLOTS).evaluate(SELECTOR_ENV))


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(any_text)
def test_any_text_fails_only_with_expression_errors(text):
    compile_and_run_everywhere(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12), st.sampled_from(["(", "not ", "-"]))
def test_deep_and_long_text_fails_only_with_expression_errors(tokens, prefix):
    body = " ".join(tokens)
    compile_and_run_everywhere(prefix * 120 + body)
    compile_and_run_everywhere((body + " ") * (MAX_LENGTH // (len(body) + 1) + 1))


LEAVES = ["item", "noun", "descriptor", "clean.logit_diff", "corrupted.prob", "clean",
          "1", "0", "2.5", "1e300", "9" * 40, '"a"', "''", "true", "false", "first_token(item)"]
BINARY = ["+", "-", "*", "/", "==", "!=", "<", ">=", "and", "or"]
UNARY = ["not ", "-", "lower", "upper", "capitalize", "strip", "len", "abs", "ntokens", "opposite"]


def _grow(children):
    binary = st.tuples(children, st.sampled_from(BINARY), children, st.booleans()).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})" if t[3] else f"{t[0]} {t[1]} {t[2]}")
    unary = st.tuples(st.sampled_from(UNARY), children).map(
        lambda t: f"{t[0]}{t[1]}" if t[0] in ("not ", "-") else f"{t[0]}({t[1]})")
    pair = st.tuples(st.sampled_from(["min", "max"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
    return st.one_of(binary, unary, pair)


well_formed = st.recursive(st.sampled_from(LEAVES), _grow, max_leaves=10)
RUNTIME_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "token": int, "record": dict}


@FUZZ
@given(well_formed)
def test_well_formed_expressions_evaluate_to_their_static_type(text):
    for scope in SCOPES:
        try:
            compiled = compile_expression(text, scope)
            value = compiled.evaluate(EXPRESSION_ENV)
        except ExpressionError:
            continue
        assert type(value) is RUNTIME_TYPES[compiled.type], (text, compiled.type, value)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=20),
       st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=3),
       st.sampled_from(["final", "-1", "3", "noun", "noun[0]", "noun[-1]", "noun#2", "noun#2[-1]", "noun[5]"]))
def test_positions_are_in_range_or_an_expression_error(n_tokens, spans, text):
    env = Env(n_tokens=n_tokens, slot_spans={"noun": [(a, max(a, b)) for a, b in spans]})
    try:
        positions = parse_positions(text, ["noun"]).evaluate(env)
    except ExpressionError:
        return
    assert all(isinstance(p, int) and p >= 0 for p in positions)
