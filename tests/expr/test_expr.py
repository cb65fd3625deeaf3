"""Tests for mi_dsl.expr: the expression language, its selectors and its errors."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from mi_dsl.errors import ExpressionError, Location, MiError
from mi_dsl.expr import (
    FUNCTIONS, MAX_DEPTH, MAX_LENGTH, Env, Scope, compile_expression, describe_functions,
    expect_type, parse_heads, parse_positions,
)


class FakeTokenizer:
    """Predictable token counts: a known lower-case word (with its leading space) is one
    token, the same word capitalised is two (' D' + 'ogs'), anything else one per character."""

    def __init__(self, vocabulary=()):
        self.vocabulary = set(vocabulary)
        self.ids = {}

    def encode(self, text):
        pieces = []
        for piece in re.findall(r" ?[^ ]+| ", text):
            word = piece.strip()
            if word in self.vocabulary:
                pieces.append(piece)
            elif word[:1].isupper() and word.lower() in self.vocabulary:
                pieces += [piece[:-len(word) + 1], word[1:]]
            else:
                pieces += list(piece)
        return [self.ids.setdefault(p, len(self.ids)) for p in pieces]


def evaluate(text, scope, **env):
    return compile_expression(text, scope).evaluate(Env(**env))


def error_of(call, *args, **kwargs) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- contexts ---------------------------------------------------------------------

TOKENIZER = FakeTokenizer({"dogs", "cats", "birds", "fish"})


@pytest.mark.parametrize("word, kept", [("Dogs", True), ("Cats", True), ("Zebras", False), ("dogs", False)])
def test_seed_noun_filter(word, kept):
    text = 'ntokens(" " + item) == 2 and ntokens(" " + lower(item)) == 1'
    assert evaluate(text, Scope.filter(), values={"item": word}, tokenizer=TOKENIZER) is kept


def test_seed_category_and_descriptor_filters():
    categories = compile_expression('ntokens(" " + item) == 1', Scope.filter())
    env = lambda word: Env(values={"item": word}, tokenizer=TOKENIZER)  # noqa: E731
    assert [w for w in ["birds", "fish", "prey"] if categories.evaluate(env(w))] == ["birds", "fish"]
    three = compile_expression('ntokens(" " + item) == 3', Scope.filter())
    assert [w for w in ["ab", "abc", "dogs"] if three.evaluate(env(w))] == ["ab"]


def test_filter_reports_what_it_uses():
    compiled = compile_expression('ntokens(" " + lower(item)) == 1', Scope.filter())
    assert compiled.type == "bool"
    assert compiled.functions_used() == {"ntokens", "lower"}
    assert compiled.names_used() == {"item"}
    assert compiled.needs_tokenizer
    assert not compile_expression("len(item) > 3", Scope.filter()).needs_tokenizer


@pytest.mark.parametrize("text, expected", [
    ("lower(noun)", "dogs"),
    ("upper(noun)", "DOGS"),
    ("capitalize(lower(noun))", "Dogs"),
    ("capitalize('mcDonald')", "McDonald"),
    ("strip('  a b ')", "a b"),
    ("noun + 's'", "Dogss"),
])
def test_template_transforms(text, expected):
    assert evaluate(text, Scope.template(["noun", "category"]), values={"noun": "Dogs"}) == expected


OPPOSITES = {"endothermic": "ectothermic", "ectothermic": "endothermic"}


def pairs(slot, word):
    return OPPOSITES[word]


def test_answer_and_foil():
    scope = Scope.answer(["descriptor", "noun"], paired_slots=["descriptor"])
    env = Env(values={"descriptor": "endothermic"}, tokenizer=TOKENIZER, opposite=pairs)
    answer = compile_expression('first_token(" " + descriptor)', scope)
    foil = compile_expression('first_token(" " + opposite(descriptor))', scope)
    assert answer.type == foil.type == "token"
    assert answer.evaluate(env) == TOKENIZER.encode(" endothermic")[0]
    assert foil.evaluate(env) == TOKENIZER.encode(" ectothermic")[0]
    assert foil.functions_used() == {"first_token", "opposite"}


def test_opposite_in_a_template():
    scope = Scope.template(["descriptor"], paired_slots=["descriptor"])
    got = evaluate("opposite(descriptor)", scope, values={"descriptor": "ectothermic"}, opposite=pairs)
    assert got == "endothermic"


@pytest.mark.parametrize("text, column, words", [
    ("opposite(noun)", 10, "slot 'noun' has no opposite pairs"),
    ("opposite('hot')", 10, "needs a word of a vocabulary of opposite pairs"),
    ("opposite(lower(descriptor))", 10, "needs a word of a vocabulary of opposite pairs"),
    ("opposite(descritor)", 10, "did you mean 'descriptor'"),
    ("opposite(descriptor, noun)", 1, "expects 1 argument"),
])
def test_opposite_errors(text, column, words):
    error = error_of(compile_expression, text, Scope.answer(["descriptor", "noun"], ["descriptor"]))
    assert error.location.column == column
    assert words in error.message + error.hint


def test_opposite_at_evaluation():
    compiled = compile_expression("opposite(descriptor)", Scope.answer(["descriptor"], ["descriptor"]))
    assert "no opposite" in error_of(compiled.evaluate, Env(values={"descriptor": "warm"}, opposite=pairs)).message
    assert "needs the opposite pairs" in error_of(compiled.evaluate, Env(values={"descriptor": "warm"})).message


KEEP = Scope.keep(["logit_diff", "prob"])


@pytest.mark.parametrize("clean, corrupted, kept", [(4.0, -3.5, True), (4.0, -2.0, False), (3.0, -4.0, False)])
def test_keep_condition(clean, corrupted, kept):
    text = "clean.logit_diff > 3 and corrupted.logit_diff < -3"
    values = {"clean": {"logit_diff": clean}, "corrupted": {"logit_diff": corrupted}}
    compiled = compile_expression(text, KEEP)
    assert compiled.evaluate(Env(values=values)) is kept
    assert compiled.metrics_used() == {("clean", "logit_diff"), ("corrupted", "logit_diff")}


def test_keep_condition_with_functions():
    values = {"clean": {"prob": 0.9}, "corrupted": {"prob": 0.2}}
    assert evaluate("abs(clean.prob - corrupted.prob) > 0.5", KEEP, values=values) is True


@pytest.mark.parametrize("text, column, words", [
    ("clean.logit_dif > 3", 7, "unknown metric 'logit_dif'; did you mean 'logit_diff'?"),
    ("clen.logit_diff > 3", 1, "unknown record 'clen'; did you mean 'clean'?"),
    ("clean > 3", 7, "records cannot be compared"),
    ("clean.prob.x > 1", 12, "needs a record"),
    ("ntokens('a') > 1", 1, "not available in a keep condition"),
])
def test_keep_errors(text, column, words):
    error = error_of(compile_expression, text, KEEP)
    assert error.location.column == column
    assert words in error.message


def test_missing_metric_at_evaluation():
    compiled = compile_expression("corrupted.prob < 1", KEEP)
    error = error_of(compiled.evaluate, Env(values={"corrupted": {}}))
    assert error.location.column == 11 and "no value of 'prob'" in error.message


# --- operators ---------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("8 / 4 / 2", 1.0),
    ("-2 * 3", -6),
    ("- -3", 3),
    ("2 * -3 + 1", -5),
    ("1 + 2 == 3", True),
    ("not 1 > 2", True),
    ("not true or true", True),
    ("true or false and false", True),
    ("(true or false) and false", False),
    ("not (true and false)", True),
    ("1 < 2 and 2 <= 2 and 3 > 2 and 3 >= 3 and 1 != 2", True),
    ("'a' + 'b' == 'ab'", True),
    ("'abc' < 'abd'", True),
    ("1 == 1.0", True),
    ("1.5e1 + 1", 16.0),
    ("abs(-3) + min(2, 5) + max(1, 2)", 7),
    ("len('four')", 4),
    ("true == false", False),
])
def test_operators_and_precedence(text, expected):
    result = evaluate(text, Scope.filter())
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("text, type_", [
    ("1 + 2", "int"), ("1 / 1", "float"), ("1 + 2.0", "float"), ("min(1, 2.0)", "float"),
    ("abs(-1)", "int"), ("item", "str"), ("1 < 2", "bool"), ("first_token(item)", "token"),
])
def test_static_types(text, type_):
    compiled = compile_expression(text, Scope.filter())
    assert compiled.type == type_
    if text == "min(1, 2.0)":
        assert compiled.evaluate(Env()) == 1.0 and isinstance(compiled.evaluate(Env()), float)


@pytest.mark.parametrize("text, expected", [
    (r'"a\"b"', 'a"b'), (r"'it\'s'", "it's"), (r'"back\\slash"', "back\\slash"),
    (r'"tab\tnew\nline"', "tab\tnew\nline"), ("'say \"hi\"'", 'say "hi"'), ('""', ""),
])
def test_string_literals(text, expected):
    assert evaluate(text, Scope.filter()) == expected


def test_keywords_end_at_word_boundaries():
    scope = Scope.template(["notable", "orange", "final", "last", "android"])
    values = {"notable": "n", "orange": "o", "final": "f", "last": "l", "android": "a"}
    assert evaluate("notable + orange + final + last + android", scope, values=values) == "nofla"
    assert evaluate("not false", scope) is True


# --- errors: syntax ---------------------------------------------------------------

@pytest.mark.parametrize("text, column, words", [
    ("item item", 6, "expected an operator or the end of the expression after 'item'"),
    ("item orange", 6, "after 'item', but found 'orange'"),
    ("lower(item) item", 13, "after 'lower(item)'"),
    ('ntokens(" " + item', 19, "a closing ')' is missing"),
    ("(item", 6, "unexpected end of expression: a closing ')' is missing"),
    ('"abc', 1, "unexpected end of expression: a string literal is missing its closing quote"),
    ("item == 'abc", 9, "missing its closing quote"),
    ("item +", 7, "unexpected end of expression: expected a value"),
    ("1 + * 2", 5, "expected a value (a name, number, string or '(') after '+'"),
    ("lower(item,", 12, "expected a value"),
    ("a < b < c", 7, "comparisons cannot be chained"),
    ("item = 'a'", 6, "write '==' to compare"),
    ("a && b", 3, "write 'and' instead of '&&'"),
    ("a || b", 3, "write 'or' instead of '||'"),
    ("!a", 1, "write 'not'"),
    ("a @ b", 3, "unexpected character '@'"),
    ("clean.5", 7, "expected a name after '.'"),
    (")", 1, "expected an expression, but found ')'"),
    ("   ", 1, "empty expression"),
    (r'"a\q"', 3, r"unknown escape '\q'"),
    ("1e999", 1, "too large"),
    ("1 < not item", 5, "'not' cannot follow an operator directly"),
    ("item == and", 9, "'and' is not a value"),
    ("lower(or)", 7, "'or' is not a value"),
])
def test_syntax_errors(text, column, words):
    error = error_of(compile_expression, text, Scope.filter())
    assert error.location.column == column, error.message
    assert words in error.message


def test_errors_use_where():
    def where(offset):
        return Location("spec.yaml", 7, 12 + offset, "vocabularies.nouns.filter")

    error = error_of(compile_expression, "lower(itme)", Scope.filter(), where)
    assert error.location == Location("spec.yaml", 7, 18, "vocabularies.nouns.filter")
    assert error.format().startswith("spec.yaml:7:18: expression error: unknown name 'itme'; did you mean 'item'?")


# --- errors: types ----------------------------------------------------------------

@pytest.mark.parametrize("text, column, words", [
    ("iten == 'a'", 1, "unknown name 'iten'; did you mean 'item'?"),
    ("lowr(item)", 1, "unknown function 'lowr'; did you mean 'lower'?"),
    ("lower", 1, "unknown name 'lower'"),
    ("lower(1)", 7, "lower() expects str, got int"),
    ("lower(item, item)", 1, "lower() expects 1 argument (str), got 2"),
    ("min(1)", 1, "min() expects 2 arguments"),
    ("max(1, 'a')", 8, "max() expects int or float as argument 2, got str"),
    ("item == 1", 6, "cannot compare str with int"),
    ("first_token(item) == 3", 19, "cannot compare token"),
    ("true < false", 6, "'<' does not apply to bool"),
    ("item and true", 1, "'and' needs true/false on both sides, but this is str"),
    ("true or 1", 9, "'or' needs true/false"),
    ("not item", 5, "'not' needs true/false, but this is str"),
    ("item + 1", 6, "'+' joins two strings or adds two numbers; got str and int"),
    ("'a' * 2", 5, "'*' needs numbers on both sides"),
    ("-item", 2, "'-' needs a number"),
    ("item.length", 6, "needs a record"),
    ("top(x, 3)", 1, "can only be used in a head selector"),
    ("opposite(item)", 10, "'item' has no opposite pairs"),  # a plain word's vocabulary has none
])
def test_type_errors(text, column, words):
    error = error_of(compile_expression, text, Scope.filter())
    assert error.location.column == column, error.message
    assert words in error.message


def test_function_name_used_as_a_value_gets_a_hint():
    assert "write lower(...)" in error_of(compile_expression, "lower", Scope.filter()).hint


def test_expect_type():
    compiled = compile_expression("ntokens(item)", Scope.filter())
    assert expect_type(compile_expression("len(item) > 1", Scope.filter()), "bool") is not None
    assert expect_type(compiled, "num") is compiled
    error = error_of(expect_type, compiled, "bool", what="a vocabulary filter")
    assert "a vocabulary filter must give bool (true/false), but it gives int" in error.message
    assert "== 1" in error.hint
    assert error.location.column == 1


def test_expect_type_uses_where_and_offset():
    compiled = compile_expression("  'x'", Scope.filter())
    error = error_of(expect_type, compiled, ["int", "float"], lambda offset: Location(line=3, column=offset + 5))
    assert error.location == Location(line=3, column=7) and "int or float" in error.message


# --- errors: evaluation -------------------------------------------------------------

@pytest.mark.parametrize("text, env, column, words", [
    ("1 / 0", {}, 3, "division by zero"),
    ("1 + 2 / (3 - 3)", {}, 7, "division by zero"),
    ("ntokens(item) > 1", {"values": {"item": "a"}}, 1, "ntokens() needs a tokenizer"),
    ("lower(item)", {}, 7, "no value was given for 'item'"),
    ("first_token('')", {"tokenizer": TOKENIZER}, 1, "has no tokens"),
    ("9" * 400 + " + 0.5", {}, 402, "too large"),
])
def test_evaluation_errors(text, env, column, words):
    compiled = compile_expression(text, Scope.filter())
    error = error_of(compiled.evaluate, Env(**env))
    assert error.location.column == column
    assert words in error.message


def test_failing_tokenizer_becomes_an_expression_error():
    class Broken:
        def encode(self, text):
            raise RuntimeError("boom")

    error = error_of(compile_expression("ntokens(item)", Scope.filter()).evaluate,
                     Env(values={"item": "a"}, tokenizer=Broken()))
    assert "ntokens() failed: boom" in error.message and isinstance(error.__cause__, RuntimeError)


# --- limits -------------------------------------------------------------------------

def test_length_limit():
    error = error_of(compile_expression, "1+" * MAX_LENGTH + "1", Scope.filter())
    assert "the limit is 2,000" in error.message and error.location.column == MAX_LENGTH + 1


@pytest.mark.parametrize("text", ["-(" * 150 + "1" + ")" * 150, "not " * 150 + "true"])
def test_depth_limit(text):
    assert "nested too deeply" in error_of(compile_expression, text, Scope.filter()).message


def test_long_flat_chains_and_redundant_parentheses_are_fine():
    assert evaluate("1" + " + 1" * 450, Scope.filter()) == 451
    assert evaluate("(" * 500 + "1" + ")" * 500, Scope.filter()) == 1
    assert evaluate(" and ".join(["true"] * 200), Scope.filter()) is True
    assert MAX_DEPTH >= 50


def test_non_text_input():
    assert "written as text, got list" in error_of(compile_expression, ["a"], Scope.filter()).message
    assert parse_positions(16, ["noun"]).evaluate(Env(n_tokens=17)) == [16]


# --- head selectors -----------------------------------------------------------------

SCORES = [[0.1, -0.9, 0.3], [0.5, 0.5, -0.2], [0.0, 0.8, -0.6], [0.2, -0.1, 0.4]]  # 4 layers x 3 heads
HEAD_ENV = Env(n_layers=4, n_heads=3, result=lambda name: SCORES)


@pytest.mark.parametrize("text, expected", [
    ("L2H1", [(2, 1)]),
    ("L1H*", [(1, 0), (1, 1), (1, 2)]),
    ("L*H2", [(0, 2), (1, 2), (2, 2), (3, 2)]),
    ("L*H*", [(layer, head) for layer in range(4) for head in range(3)]),
    ("top(attr, 3)", [(2, 1), (1, 0), (1, 1)]),  # 0.8 first; the 0.5 tie goes to the lower head
    ("bottom(attr, 2)", [(0, 1), (2, 2)]),
    ("top_abs(attr, 3)", [(0, 1), (2, 1), (2, 2)]),
    (" top ( attr , 1 ) ", [(2, 1)]),
])
def test_head_selectors(text, expected):
    selector = parse_heads(text, ["attr"])
    assert selector.type == "heads"
    assert selector.evaluate(HEAD_ENV) == expected


def test_head_selector_references():
    selector = parse_heads("top(head_attr, 12)", ["head_attr"])
    assert selector.references() == [("head_attr", 4)]
    assert selector.functions_used() == {"top"}
    assert parse_heads("L8H2", []).references() == []


@pytest.mark.parametrize("text, column, words", [
    ("L4H0", 1, "layer 4 is out of range: the model has 4 layers (0 to 3)"),
    ("  L1H3", 3, "head 3 is out of range: the model has 3 heads per layer (0 to 2)"),
    ("L9H*", 1, "layer 9 is out of range"),
    ("L*H7", 1, "head 7 is out of range"),
    ("top(attr, 13)", 11, "asks for 13 heads, but the model has only 12"),
])
def test_head_ranges_at_evaluation(text, column, words):
    error = error_of(parse_heads(text, ["attr"]).evaluate, HEAD_ENV)
    assert error.location.column == column and words in error.message


@pytest.mark.parametrize("text, column, words", [
    ("top(atr, 3)", 5, "unknown analysis 'atr'; did you mean 'attr'?"),
    ("tpo(attr, 3)", 1, "unknown function 'tpo'; did you mean 'top'?"),
    ("lower(attr, 3)", 1, "lower() cannot select heads"),
    ("top(attr)", 1, "top() expects 2 arguments (analysis, int), got 1"),
    ("top('attr', 3)", 5, "takes the name of an analysis"),
    ("top(attr, 0)", 11, "at least 1 head"),
    ("top(attr, -2)", 11, "at least 1 head"),
    ("top(attr, 2.5)", 11, "whole number"),
    ("L8H2x", 1, "'L8H2x' is not a head selector"),
    ("l8h2", 1, "is not a head selector"),
    ("L8H2 L9H1", 6, "expected the end of the head selector after 'L8H2'"),
    ("top(attr, 3", 12, "a closing ')' is missing"),
    ("", 1, "empty head selector"),
])
def test_head_selector_errors(text, column, words):
    error = error_of(parse_heads, text, ["attr"])
    assert error.location.column == column, error.message
    assert words in error.message
    if "not a head selector" in words:
        assert "L10H*" in error.hint


def test_head_selector_faults_from_the_analysis():
    selector = parse_heads("top(attr, 2)", ["attr"])
    nan = Env(n_layers=1, n_heads=2, result=lambda name: [[0.0, math.nan]])
    assert "NaN" in error_of(selector.evaluate, nan).message
    wrong_shape = Env(n_layers=2, n_heads=2, result=lambda name: [[0.0, 1.0]])
    assert "the model has 2 layers of 2 heads" in error_of(selector.evaluate, wrong_shape).message
    assert "needs the results" in error_of(selector.evaluate, Env(n_layers=1, n_heads=2)).message
    assert "number of layers" in error_of(parse_heads("L0H0").evaluate, Env()).message


def test_any_analysis_name_when_none_are_listed():
    assert parse_heads("top(whatever, 1)").references() == [("whatever", 4)]


# --- position selectors -------------------------------------------------------------

SLOTS = ["noun", "descriptor", "category"]
POSITION_ENV = Env(n_tokens=17, slot_spans={"noun": [(3, 5), (10, 11)], "descriptor": [(6, 9)]})


@pytest.mark.parametrize("text, expected", [
    ("final", [16]), ("last", [16]), ("0", [0]), ("16", [16]), ("-1", [16]), ("-17", [0]),
    ("noun", [3, 4]), ("noun[0]", [3]), ("noun[-1]", [4]), ("descriptor[-3]", [6]),
    ("noun#1", [3, 4]), ("noun#2", [10]), ("noun#2[-1]", [10]), ("noun #2 [ 0 ]", [10]),
])
def test_position_selectors(text, expected):
    selector = parse_positions(text, SLOTS)
    assert selector.type == "positions"
    assert selector.evaluate(POSITION_ENV) == expected


def test_position_selector_names():
    assert parse_positions("noun#2[-1]", SLOTS).names_used() == {"noun"}
    assert parse_positions("final", SLOTS).names_used() == frozenset()


@pytest.mark.parametrize("text, column, words", [
    ("17", 1, "position 17 is out of range: the prompt has 17 tokens"),
    ("-18", 1, "position -18 is out of range"),
    ("noun[2]", 6, "noun[2] is out of range: 'noun' has 2 token(s) here"),
    ("noun#2[-2]", 8, "noun#2[-2] is out of range"),
    ("noun#3", 6, "noun#3 does not exist: this prompt has 2 occurrence(s)"),
    ("category", 1, "slot 'category' does not occur in this prompt"),
])
def test_position_ranges_at_evaluation(text, column, words):
    error = error_of(parse_positions(text, SLOTS).evaluate, POSITION_ENV)
    assert error.location.column == column and words in error.message


@pytest.mark.parametrize("text, column, words", [
    ("nuon", 1, "unknown slot 'nuon'; did you mean 'noun'?"),
    ("fianl", 1, "did you mean 'final'?"),
    ("noun#0", 6, "occurrences count from 1"),
    ("noun#", 6, "expected a number after '#'"),
    ("noun[x]", 6, "expected a number after '['"),
    ("noun[0", 7, "a closing ']' is missing"),
    ("final#2", 6, "expected the end of the position selector after 'final'"),
    ("1.5", 2, "expected the end of the position selector after '1'"),
])
def test_position_selector_errors(text, column, words):
    error = error_of(parse_positions, text, SLOTS)
    assert error.location.column == column, error.message
    assert words in error.message


def test_occurrences_checked_against_the_template_when_counts_are_known():
    error = error_of(parse_positions, "noun#3", {"noun": 2})
    assert "the template has 2 occurrence(s)" in error.message and error.location.column == 6
    assert parse_positions("noun#2", {"noun": 2}).evaluate(POSITION_ENV) == [10]


def test_position_selector_needs_the_prompt():
    assert "token count" in error_of(parse_positions("final", SLOTS).evaluate, Env()).message


# --- registry and packaging -------------------------------------------------------

def test_function_registry_describes_every_function():
    described = {name: (signature, text) for name, signature, text in describe_functions()}
    assert set(described) == set(FUNCTIONS) >= {
        "ntokens", "first_token", "lower", "upper", "capitalize", "strip", "len", "opposite",
        "abs", "min", "max", "top", "bottom", "top_abs"}
    assert described["ntokens"][0] == "ntokens(str) -> int"
    assert all(text for _, text in described.values())


def test_errors_are_mi_errors():
    assert issubclass(ExpressionError, MiError)


def test_importing_expr_stays_light():
    code = (
        "import sys, mi_dsl.expr as e\n"
        "e.compile_expression('ntokens(item) == 1', e.Scope.filter())\n"
        "heavy = {'torch', 'transformers', 'transformer_lens', 'numpy', 'plotly'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
