"""Issue 12, first half: records, the richer expression language and corruption by
swap / resample-where / set / template, on a word-level tokenizer of this file's words.

The reference's operator table is generated from grammar.lark; every example in it is
evaluated here and must give the value it states.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from mi_dsl.dataset import build_dataset
from mi_dsl.dataset.tokenizer import load_tokenizer
from mi_dsl.errors import ExpressionError, MiError, SchemaError, SpecMeaningError
from mi_dsl.expr import Env, Scope, compile_expression
from mi_dsl.expr.docs import example_scope_and_env, operator_docs
from mi_dsl.expr.values import Record
from mi_dsl.spec import load_spec

from tests.word_tokenizer import word_level_tokenizer

WORDS = ["<bos>", "[UNK]", "So", "is", "a", "really", "great", "friend", ",", "isn", "'", "t", "she", "he",
         "Mary", "John", "Anna", "Tom", "Lisa", "Bob", "The", "capital", "of", "France", "Paris", "Italy",
         "Rome", "Spain", "Madrid", "war", "lasted", "from", "the", "year", "17", "to", "01", "05", "07", "42",
         "big", "small", "tall", "short", "cats", "dogs", "are", "Are", "."]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    return word_level_tokenizer(WORDS, tmp_path_factory.mktemp("records_tokenizer"))


@pytest.fixture
def build(tmp_path, tokenizer_file):
    """build(spec text, files={name: text}) -> dataset (the spec's model has this file's tokenizer)."""

    def run(text: str, files=None, name: str = "spec.yaml"):
        for file, body in (files or {}).items():
            (tmp_path / file).write_text(textwrap.dedent(body))
        spec_file = tmp_path / name
        spec_file.write_text(HEADER + textwrap.dedent(text))
        spec = load_spec(spec_file, [f"model.tokenizer={tokenizer_file}"])
        return build_dataset(spec, load_tokenizer(spec.model, spec.bos_token))

    return run


HEADER = "version: 1\nseed: 3\nmodel: {source: pretrained, name: tests/no-such-model, prepend_bos: true}\n"

PRONOUN = """\
vocabularies:
  names:
    items:
      - {name: Mary, gender: female}
      - {name: John, gender: male}
      - {name: Anna, gender: female}
      - {name: Tom, gender: male}
      - {name: Lisa, gender: female}
prompts:
  template: "So {name} is a really great friend, isn't"
  slots: {name: names}
  answer: 'first_token(" she" if name.gender == "female" else " he")'
  foil: 'first_token(" he" if name.gender == "female" else " she")'
  corrupt: {resample: name, where: 'new.gender != name.gender'}
"""


def error(run, *args, **kwargs) -> MiError:
    with pytest.raises(MiError) as caught:
        run(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------- the reference's examples

@pytest.mark.parametrize("doc", operator_docs(), ids=lambda d: d.form)
def test_every_operator_example_of_the_reference_gives_its_stated_value(doc):
    scope, env = example_scope_and_env()
    value = compile_expression(doc.example, scope).evaluate(env)
    stated = compile_expression(doc.value, scope).evaluate(env)
    assert value == stated and type(value) is type(stated), (doc.example, value, stated)


def test_the_reference_documents_every_operator_of_the_grammar():
    forms = " ".join(d.form for d in operator_docs())
    for operator in ["if", "else", " or ", " and ", "not", "==", "!=", "<=", ">=", " in ", "not in", "+", "-",
                     "*", "/", "//", "%", ".field", "[i]", "[i:j]", "[a, b, c]", "true", "false", "(a)"]:
        assert operator in forms, operator


# --------------------------------------------------------------------------- expressions

SCOPE = Scope.template({"country": "rec:countries", "yy": "str"}, tokens=True,
                       records={"rec:countries": {"country": "str", "capital": "str", "population": "int"}})
FRANCE = Record("France", {"country": "France", "capital": "Paris", "population": 68})


def value(text, **values):
    env = Env(values={"country": FRANCE, "yy": "07", **values})
    return compile_expression(text, SCOPE).evaluate(env)


@pytest.mark.parametrize("text, expected", [
    ('"0" + yy if len(yy) == 1 else yy', "07"),
    ("int(yy) + 1 if int(yy) < 9 else 0", 8),
    ("1 if country.population > 50 else 0.5", 1.0),
    ('country in ["Italy", "France"]', True),
    ('country not in ["Italy", "France"]', False),
    ('"ran" in country', True),
    ("7 in [1, 2.5, 7]", True),
    ("[1, 2, 3][-1] * [4, 5][0]", 12),
    ("[1, 2, 3, 4][1:3]", [2, 3]),
    ("[1, 2, 3][:-1] == [1, 2]", True),
    ('yy[0] + yy[-1:]', "07"),
    ('country[:3] + country.capital[1:]', "Fraaris"),
    ("str(country.population // 10) + str(country.population % 10)", "68"),
    ("float(yy) / 2", 3.5),
    ("int(3.9) + int(-3.9)", 0),
    ('str(1 < 2) + str(2.5)', "true2.5"),
    ("len([1, 2, 3]) + len(country)", 9),
    ("-(country.population - 70)", 2),
    ('[true, false][1] or not [true][0]', False),
])
def test_new_operators_evaluate(text, expected):
    result = value(text)
    assert result == expected and type(result) is type(expected), result


def test_the_result_types_are_known_before_evaluation():
    types = {t: compile_expression(t, SCOPE).type for t in
             ['[1, 2.5]', '["a", country]', "country", "country.population", '[country.capital][0]',
              "yy[1:]", '1 if true else 2', '"a" if true else country']}
    assert types == {'[1, 2.5]': "list[float]", '["a", country]': "list[str]", "country": "rec:countries",
                     "country.population": "int", '[country.capital][0]': "str", "yy[1:]": "str",
                     '1 if true else 2': "int", '"a" if true else country': "str"}


def test_token_lists_index_and_slice(tokenizer_file):
    from mi_dsl.dataset.tokenizer import _from_file

    tokenizer = _from_file(tokenizer_file, "<bos>", "test", None)
    env = Env(values={"country": FRANCE, "yy": "07"}, tokenizer=tokenizer)
    ids = compile_expression('tokens(" the year 17")', SCOPE)
    assert ids.type == "tokens" and ids.evaluate(env) == tuple(WORDS.index(w) for w in ["the", "year", "17"])
    assert compile_expression('tokens(" the year 17")[-1]', SCOPE).type == "token"
    assert compile_expression('tokens(" the year 17")[1:]', SCOPE).evaluate(env) == (WORDS.index("year"),
                                                                                    WORDS.index("17"))
    listed = compile_expression('[first_token(" she"), first_token(" he")]', SCOPE)
    assert listed.type == "tokens" and listed.evaluate(env) == (WORDS.index("she"), WORDS.index("he"))
    assert compile_expression('first_token(" she") in tokens(" she is")', SCOPE).evaluate(env) is True


@pytest.mark.parametrize("text, column, words", [
    ("country.capitol", 9, "unknown field 'capitol' of 'country'; did you mean 'capital'?"),
    ("yy.size", 4, "'.size' needs a record, but this is str"),
    ("[]", 1, "an empty list [] has no element type"),
    ('[1, "a"]', 5, "a list holds values of one type: this is str, the first element int"),
    ('1 if yy else 2', 6, "the condition after 'if' must be true/false"),
    ('1 if true else "a"', 16, "both sides of 'if ... else' must give one type"),
    ('yy["0"]', 4, "an index must be an int, but this is str"),
    ("country.population[0]", 1, "'[i]' needs a list, a token list or a string"),
    ('1 in ["a"]', 3, "cannot look for int in a list of str"),
    ("yy in 5", 7, "'in' needs a list, a token list or a string on its right"),
    ("int([1])", 5, "int() expects a string, number or true/false"),
    ("len(5)", 5, "len() expects a string or a list"),
    ("1 if true", 10, "expected 'else' after 'true'"),
    ("yy[1:", 6, "unexpected end of expression"),
])
def test_expression_faults_are_located(text, column, words):
    caught = error(compile_expression, text, SCOPE)
    assert isinstance(caught, ExpressionError)
    assert words in caught.message and caught.location.column == column, (caught.message, caught.location)


@pytest.mark.parametrize("text, column, words", [
    ("[1, 2][5]", 8, "index 5 is out of range: there are 2 elements"),
    ('int(yy + "x")', 1, "int('07x'): the string is not an integer"),
    ("country.population // (country.population - 68)", 20, "division by zero"),
])
def test_evaluation_faults_are_located(text, column, words):
    compiled = compile_expression(text, SCOPE)
    caught = error(compiled.evaluate, Env(values={"country": FRANCE, "yy": "07"}))
    assert words in caught.message and caught.location.column == column, (caught.message, caught.location)


# --------------------------------------------------------------------------- records

def test_records_fill_templates_answers_and_a_conditional_resample(build):
    dataset = build(PRONOUN)
    assert len(dataset.pairs) == 5
    she, he = WORDS.index("she"), WORDS.index("he")
    gender = {"Mary": "female", "John": "male", "Anna": "female", "Tom": "male", "Lisa": "female"}
    for pair in dataset.pairs:
        clean_name = dict(pair.values)["name"]
        other = pair.corrupted.text.split()[1]
        assert gender[other] != gender[clean_name], (pair.clean.text, pair.corrupted.text)
        assert (pair.answer, pair.foil) == ((she, he) if gender[clean_name] == "female" else (he, she))
        assert pair.clean.text == f"So {clean_name} is a really great friend, isn't"
    # seeded: the same partners every time
    assert [p.corrupted.text for p in build(PRONOUN).pairs] == [p.corrupted.text for p in dataset.pairs]


RECORD_FILES = {
    "countries.csv": """\
        # a comment line
        country,capital,language
        France,Paris,French
        Italy,Rome,Italian
        Spain,Madrid,Spanish
        """,
    "countries.jsonl": """\
        {"country": "France", "capital": "Paris", "language": "French"}
        {"country": "Italy", "capital": "Rome", "language": "Italian"}
        {"country": "Spain", "capital": "Madrid", "language": "Spanish"}
        """,
    "countries.yaml": """\
        - {country: France, capital: Paris, language: French}
        - {country: Italy, capital: Rome, language: Italian}
        - {country: Spain, capital: Madrid, language: Spanish}
        """,
}

CAPITALS = """\
vocabularies:
  countries: {file: FILE, filter: 'item.language != "Italian"'}
prompts:
  template: "The capital of {country} is {country.capital} ."
  slots: {country: countries}
  answer: 'first_token(" " + country.capital)'
  foil: 'first_token(" " + corrupted.country.capital)'
  corrupt: {set: {country: '"Spain" if country == "France" else "France"'}}
"""


@pytest.mark.parametrize("file", sorted(RECORD_FILES))
def test_records_from_csv_jsonl_and_yaml_files_give_one_dataset(build, file):
    dataset = build(CAPITALS.replace("FILE", file), {file: RECORD_FILES[file]})
    assert [(p.clean.text, p.corrupted.text) for p in dataset.pairs] == [
        ("The capital of France is Paris .", "The capital of Spain is Madrid ."),
        ("The capital of Spain is Madrid .", "The capital of France is Paris .")]
    assert [(p.answer, p.foil) for p in dataset.pairs] == [(WORDS.index("Paris"), WORDS.index("Madrid")),
                                                            (WORDS.index("Madrid"), WORDS.index("Paris"))]
    assert dataset.vocab["countries"].dropped == ["Italy"]
    # {country.capital} is the slot's second occurrence: its span is the capital's token
    first = dataset.pairs[0].clean
    assert first.spans["country"] == ((4, 5), (6, 7)) and first.ids[6] == WORDS.index("Paris")


def test_pairs_are_records_with_an_opposite_field_and_opposite_works_in_where(build):
    dataset = build("""\
        vocabularies:
          size: {pairs: [[big, small], [tall, short]]}
          animal: {items: [cats, dogs]}
        prompts:
          template: "The {animal} are {size} . Are the {animal}"
          where: 'opposite(size) != "short" and size.opposite != "tall"'
          answer: 'first_token(" " + size)'
          foil: 'first_token(" " + size.opposite)'
          corrupt: {swap: size}
        """)
    assert sorted({dict(p.values)["size"] for p in dataset.pairs}) == ["big", "small"]
    assert all(p.foil == WORDS.index(dict(p.values)["size"] == "big" and "small" or "big") for p in dataset.pairs)


def test_a_corrupted_template_may_use_another_slot_which_joins_the_product(build):
    dataset = build("""\
        vocabularies:
          names: {items: [Mary, John, Tom]}
        prompts:
          template: "So {a} is a friend"
          slots: {a: names, b: names}
          where: 'a != b'
          answer: 'first_token(" " + a)'
          foil: 'first_token(" " + corrupted.b)'
          corrupt: {template: "So {b} is a friend"}
        """)
    assert len(dataset.pairs) == 6
    assert all(p.corrupted.text == f"So {dict(p.values)['b']} is a friend" for p in dataset.pairs)


def test_set_slots_to_constants_like_the_greater_than_task(build):
    dataset = build("""\
        vocabularies:
          yy: {items: ["05", "07", "42"]}
        prompts:
          template: "The war lasted from the year 17{yy} to the year 17"
          answer: 'first_token(" 17")'
          foil: 'first_token(" 01")'
          corrupt: {set: {yy: '"01"'}}
        """)
    assert {p.corrupted.text for p in dataset.pairs} == {"The war lasted from the year 1701 to the year 17"}


@pytest.mark.parametrize("spec, words", [
    (PRONOUN.replace("      - {name: Tom, gender: male}", "      - {name: Tom}"),
     "record 4 of vocabulary 'names' is missing the field 'gender'"),
    (PRONOUN.replace("{name: Tom, gender: male}", "{name: Tom, gender: male, age: 3}"),
     "has the field 'age' that the first record does not have"),
    (PRONOUN.replace("{name: Tom, gender: male}", "{name: Tom, gender: 1}"),
     "field 'gender' of vocabulary 'names' is str in the first record but int here"),
    (PRONOUN.replace("{name: Tom, gender: male}", "{name: 17, gender: male}"),
     "so it must be a string; 17 is int"),
    (PRONOUN.replace("      - {name: Tom, gender: male}", "      - Tom"),
     "mixes records and plain words"),
    (PRONOUN.replace("name.gender == \"female\" else \" he\")'", "name.sex == \"female\" else \" he\")'"),
     "unknown field 'sex' of 'name'; expected one of: 'gender', 'name'"),
    (PRONOUN.replace("new.gender != name.gender", "name.gender != \"x\""), "corrupt.where never reads `new`"),
    (PRONOUN.replace("new.gender != name.gender", "new.gender == \"robot\""),
     "no item of slot 'name''s vocabulary satisfies corrupt.where"),
    (PRONOUN.replace("corrupt: {resample: name, where: 'new.gender != name.gender'}",
                     "corrupt: {resample: name, set: {name: '\"Tom\"'}}"), "slot 'name' is changed twice"),
    (PRONOUN.replace("corrupt: {resample: name, where: 'new.gender != name.gender'}",
                     "corrupt: {set: {name: '\"Bob\"'}}"), "slot 'name' is set to 'Bob', which is not an item"),
    (PRONOUN.replace("corrupt: {resample: name, where: 'new.gender != name.gender'}",
                     "corrupt: {where: 'new.gender != name.gender'}"),
     "'where' in 'corrupt' needs 'resample' beside it"),
    (PRONOUN.replace("{name: Mary, gender: female}", "{name: Mary, gender: [female]}"), "must be"),
    (PRONOUN.replace("  names:\n", "  names:\n    text: nam\n"), "unknown field 'nam' for `text:`"),
    (PRONOUN.replace("So {name} is", "So {name.gender + 1} is"), "'+' joins two strings or adds two numbers"),
])
def test_record_and_corruption_faults_are_refused_with_a_location(build, spec, words):
    caught = error(build, spec)
    assert isinstance(caught, (SchemaError, SpecMeaningError, ExpressionError))
    assert words in caught.message, caught.message
    assert caught.location.file.endswith("spec.yaml") and caught.location.line, caught.location


def test_a_placeholder_must_give_a_string(build):
    caught = error(build, PRONOUN.replace("isn't\"", "isn't {name.gender == \\\"x\\\"}\""))
    assert "a placeholder must give str, but it gives bool" in caught.message


def test_record_file_faults_point_into_the_file(build):
    caught = error(build, CAPITALS.replace("FILE", "bad.csv"), {"bad.csv": "country,capital\nFrance,Paris\nItaly\n"})
    assert caught.location.file.endswith("bad.csv") and caught.location.line == 3
    assert "this CSV row has 1 values but the header (line 1) names 2 fields" in caught.message
    caught = error(build, CAPITALS.replace("FILE", "bad.jsonl"), {"bad.jsonl": '{"country": "France"}\n{"country": \n'})
    assert caught.location.file.endswith("bad.jsonl") and caught.location.line == 2 and "invalid JSON" in caught.message
    caught = error(build, CAPITALS.replace("FILE", "bad.yaml"),
                   {"bad.yaml": "- {country: France, capital: Paris}\n- {country: Italy, capitol: Rome}\n"})
    assert (caught.location.line, caught.location.column) == (2, 29) and "'capitol'" in caught.message


def test_a_record_file_outside_the_tree_is_refused(build, tmp_path):
    (tmp_path.parent / "outside.csv").write_text("country,capital\nFrance,Paris\n")
    caught = error(build, CAPITALS.replace("FILE", "../outside.csv"))
    assert "outside the spec's directory tree" in caught.message


def test_plan_shows_records_as_their_text(build, tmp_path, tokenizer_file, cli):
    (tmp_path / "spec.yaml").write_text(HEADER + PRONOUN)
    code, out, err = cli("plan", tmp_path / "spec.yaml", "--json", "--set", f"model.tokenizer={tokenizer_file}")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["vocab"]["names"]["kept"] == ["Mary", "John", "Anna", "Tom", "Lisa"]
    assert plan["dataset"]["examples"][0]["values"] == {"name": "Mary"}


def test_the_readme_s_own_task_snippet_builds(build):
    from tests.conftest import REPO
    import re

    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"## Your own task.*?```yaml\n(.*?)```", readme, re.S).group(1)
    dataset = build(snippet)
    assert len(dataset.pairs) == 4
    for pair in dataset.pairs:
        female = dict(pair.values)["name"] in ("Mary", "Anna")
        assert (pair.corrupted.text.split()[1] in ("Mary", "Anna")) != female
        assert pair.answer == WORDS.index("she" if female else "he")


# --------------------------------------------------------------------------- the shipped record specs

@pytest.fixture(scope="module")
def gemma_datasets():
    """The two record specs' datasets on Gemma's own tokenizer (no weights load)."""
    from tests.conftest import SPECS
    from mi_dsl.compile.prepare import prepare

    return {name: prepare(SPECS / f"{name}.yaml") for name in ("gendered_pronoun", "factual_recall")}


def test_gendered_pronoun_pairs_flip_the_gender_on_gemma(gemma_datasets):
    prepared = gemma_datasets["gendered_pronoun"]
    tokenizer, dataset = prepared.tokenizer, prepared.dataset
    gender = {r["name"]: r["gender"] for r in prepared.spec.vocabularies["names"].records}
    assert len(dataset.pairs) == 20 and dataset.token_lengths == [12]
    for pair in dataset.pairs:
        clean, other = dict(pair.values)["name"], pair.corrupted.text.split()[1]
        assert gender[clean] != gender[other]
        she = gender[clean] == "female"
        assert tokenizer.token_str(pair.answer) == (" she" if she else " he")
        assert tokenizer.token_str(pair.foil) == (" he" if she else " she")
        assert pair.clean.spans["name"] == ((2, 3),) == pair.corrupted.spans["name"]


def test_factual_recall_pairs_name_both_capitals_on_gemma(gemma_datasets):
    prepared = gemma_datasets["factual_recall"]
    tokenizer, dataset = prepared.tokenizer, prepared.dataset
    records = {r["country"]: r for r in prepared.spec.vocabularies["countries"].records}
    assert set(dataset.vocab["countries"].dropped) == {"Argentina", "Brazil", "Mexico", "Burkina Faso", "Kyrgyzstan"}
    # countries of one and two tokens ("South Korea"): prompts of two lengths
    assert len(dataset.pairs) == 31 and dataset.token_lengths == [6, 7]
    for pair in dataset.pairs:
        clean = records[dict(pair.values)["country"]]
        other = records[dict(pair.corrupted_values)["country"]]
        assert pair.corrupted.text == f"The capital of {other['country']} is"
        assert other["continent"] != clean["continent"]
        assert tokenizer.token_str(pair.answer) == " " + clean["capital"]
        assert tokenizer.token_str(pair.foil) == " " + other["capital"]
        (start, stop), = pair.clean.spans["country"]
        assert stop - start == len(tokenizer.encode(" " + clean["country"]))
