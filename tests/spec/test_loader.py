"""mi_dsl.spec.loader: safe YAML into plain data, with the line and column of every node."""
from __future__ import annotations

import time

import pytest

from mi_dsl.errors import FileAccessError, Location, SpecSyntaxError
from mi_dsl.spec.loader import MAX_NODES, MAX_SPEC_BYTES, load_file, parse_yaml, read_text

TEXT = """\
version: 1
model:
  source: embedded   # a comment
  prepend_bos: true
prompts:
  template: "All {category} are"
  answer: 'first_token(" " + x)'
  plain: first_token(x)
list:
  - a
  - [b, c]
"""


def test_plain_data_out():
    doc = parse_yaml(TEXT, "spec.yaml")
    assert doc.data == {"version": 1, "model": {"source": "embedded", "prepend_bos": True},
                        "prompts": {"template": "All {category} are", "answer": 'first_token(" " + x)',
                                    "plain": "first_token(x)"},
                        "list": ["a", ["b", "c"]]}
    assert type(doc.data) is dict and type(doc.data["list"]) is list
    assert doc.text == TEXT


@pytest.mark.parametrize("path, line, col", [
    ((), 1, 1),
    (("version",), 1, 10),
    (("model",), 3, 3),
    (("model", "source"), 3, 11),
    (("model", "prepend_bos"), 4, 16),
    (("list", 0), 10, 5),
    (("list", 1, 1), 11, 9),
    (("model", "no_such_key"), 3, 3),  # falls back to the nearest located parent
])
def test_value_locations(path, line, col):
    loc = parse_yaml(TEXT, "spec.yaml").source.value(path)
    assert (loc.file, loc.line, loc.column) == ("spec.yaml", line, col)


def test_key_locations_and_dotted_paths():
    smap = parse_yaml(TEXT, "spec.yaml").source
    assert smap.key(("model", "source")) == Location("spec.yaml", 3, 3, "model.source")
    assert smap.key(("prompts",)) == Location("spec.yaml", 5, 1, "prompts")
    assert smap.value(("list", 1, 0)).path == "list[1][0]"


@pytest.mark.parametrize("key, offset, col", [
    ("template", 0, 14),   # inside double quotes: one column for the quote
    ("template", 5, 19),   # the '{' of {category}
    ("answer", 0, 12),     # single quotes
    ("plain", 12, 22),     # unquoted: no shift
])
def test_columns_inside_scalars(key, offset, col):
    smap = parse_yaml(TEXT, "spec.yaml").source
    assert smap.inside(("prompts", key), offset).column == col


def test_small_aliases_are_expanded():
    doc = parse_yaml("base: &b [x, y]\ncopy: *b\nmap: &m {k: 1}\nother: *m\n", "a.yaml")
    assert doc.data == {"base": ["x", "y"], "copy": ["x", "y"], "map": {"k": 1}, "other": {"k": 1}}
    assert doc.data["copy"] is not doc.data["base"]  # plain, independent data


def test_expansion_just_under_the_limit_loads_and_just_over_is_refused():
    width = 1000
    row = "[" + ", ".join(["0"] * (width - 1)) + "]"  # a list node and its items: `width` values

    def doc(copies):
        return f"a: &a {row}\nb: [{', '.join(['*a'] * copies)}]\n"

    # values: root + 2 keys + a + b + b's copies of a (each `width` values)
    under = (MAX_NODES - 4) // width - 1
    assert len(parse_yaml(doc(under), "ok.yaml").data["b"]) == under
    with pytest.raises(SpecSyntaxError, match="billion laughs") as info:
        parse_yaml(doc(under + 3), "bomb.yaml")
    assert (info.value.location.line, info.value.location.column) == (2, 5)


def test_a_billion_laughs_is_refused_quickly():
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    started = time.perf_counter()
    with pytest.raises(SpecSyntaxError, match="more than the 100,000") as info:
        parse_yaml("\n".join(levels) + "\n", "bomb.yaml")
    assert time.perf_counter() - started < 1.0
    assert info.value.location.line == 9 and "*h" in info.value.message


def test_recursive_alias_is_refused():
    with pytest.raises(SpecSyntaxError, match="recursive") as info:
        parse_yaml("a: &x\n  b: *x\n", "r.yaml")
    assert (info.value.location.line, info.value.location.column) == (2, 6)


def test_very_deep_nesting_is_a_yaml_error_not_a_crash():
    from mi_dsl import limits

    with pytest.raises(SpecSyntaxError, match="more than 64 levels deep") as info:  # the bound (limits.py)
        parse_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert (info.value.location.line, info.value.location.column) == (1, 67)
    with limits.using({"nesting": 100_000}), pytest.raises(SpecSyntaxError, match="nested too deeply"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")  # Python's own recursion bound


@pytest.mark.parametrize("text, words, line, col", [
    ("a: 1\na: 2\n", "duplicate key 'a' (first defined on line 1)", 2, 1),
    ("m:\n  k: 1\n  k: 2\n", "duplicate key 'k'", 3, 3),
    ("a: !!python/object:os.system {}\n", "python/object:os.system' is not allowed", 1, 4),
    ("a: !!python/name:os.system ''\n", "not allowed", 1, 4),
    ("a: !function utils.f\n", "'!function' is not allowed", 1, 4),
    ("a: !!binary aGVsbG8=\n", "not allowed", 1, 4),
    ("a: !!set {x}\n", "not allowed", 1, 4),
    ("base: &b {x: 1}\nm:\n  <<: *b\n", "no merge keys", 3, 3),
    ("? [a, b]\n: c\n", "plain names", 1, 3),
    ("a: [1, 2\n", "invalid YAML", 2, 1),
    ("a: *nothing\n", "undefined alias", 1, 4),
    ("a: 1\n---\nb: 2\n", "invalid YAML", 2, 1),
    ("a:\n\tb: 1\n", "'\\t'", 2, 1),
    ("a: x\x00y\n", "special characters", 1, 5),
])
def test_refused_yaml(text, words, line, col):
    with pytest.raises(SpecSyntaxError) as info:
        parse_yaml(text, "bad.yaml")
    assert words in info.value.message
    assert (info.value.location.file, info.value.location.line, info.value.location.column) == ("bad.yaml", line, col)


def test_tab_indentation_gets_a_hint():
    with pytest.raises(SpecSyntaxError) as info:
        parse_yaml("a:\n\tb: 1\n", "tab.yaml")
    assert "tabs" in info.value.hint


def test_core_scalars_keep_their_types():
    doc = parse_yaml("i: 3\nf: 0.5\nb: false\nn: null\ns: '3'\nd: 2024-01-01\n", "s.yaml")
    assert doc.data["i"] == 3 and doc.data["f"] == 0.5 and doc.data["b"] is False and doc.data["n"] is None
    assert doc.data["s"] == "3"
    assert doc.data["d"] == "2024-01-01"  # a date stays the text written (no datetime in a spec)


def test_empty_document():
    assert parse_yaml("# only a comment\n", "e.yaml").data is None


# --------------------------------------------------------------------------- files

def test_load_file_names_the_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("a: 1\n")
    doc = load_file(spec)
    assert doc.data == {"a": 1} and doc.source.file == str(spec)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileAccessError, match="does not exist"):
        read_text(tmp_path / "nope.yaml")
    with pytest.raises(FileAccessError, match="is a directory"):
        read_text(tmp_path)


def test_too_large_file(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_SPEC_BYTES + 1))
    with pytest.raises(FileAccessError, match="larger than"):
        read_text(big)


def test_non_utf8_is_located_at_the_bad_byte(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("a: 1\nname: Zoë café".encode("utf-8") + b"\xe9\n")
    # "Zoë" and "café" are valid UTF-8 (two bytes for ë and é); the column counts characters, not bytes.
    with pytest.raises(FileAccessError) as info:
        read_text(bad)
    assert (info.value.location.line, info.value.location.column) == (2, 15)
    assert "byte 0xe9 on line 2, column 15" in info.value.message


def test_a_vocabulary_file_error_points_at_the_spec(tmp_path):
    where = Location("spec.yaml", 9, 11, "vocabularies.nouns.file")
    with pytest.raises(FileAccessError) as info:
        read_text(tmp_path / "nouns.txt", "vocabulary", where)
    assert info.value.location == where and "vocabulary file" in info.value.message


@pytest.mark.parametrize("text, at, words", [
    # an unquoted colon inside a value
    ("description: Ratio: clean vs corrupted\n", (1, 19),
     ["quote the value", 'description: "Ratio: clean vs corrupted"']),
    # a list item's second key one column too deep (issue 15's "mapping values are not allowed here")
    ("analyses:\n  - kind: logit_attribution\n     id: x\n", (3, 8), ["indented more than the line above it",
                                                                    "line 2, column 5", "column 5"]),
    # a key that lines up with nothing above it
    ("model:\n    source: random\n  name: x\n", (3, 3), ["column 3", "columns 1, 5", "mis-indented"]),
    ("pipeline:\n  - keep: a\n   - sample: {n: 3}\n", (3, 4), ["column 4", "mis-indented"]),
    # a tab after a key, not in the indentation
    ("model:\n  source:\trandom\n", (2, 10), ["tab", "space"]),
    # a double-quoted value with double quotes inside: YAML ends the value at the second quote
    ('prompts:\n  template: "So {a if b == "x" else c}"\n', (2, 29),
     ["the value of 'template' starts with \"", "template: 'So {a if b == \"x\" else c}'"]),
    ("prompts:\n  answer: 'first_token(' + y\n", (2, 26), ['answer: "first_token(\' + y"']),
])
def test_yaml_syntax_errors_get_a_hint(text, at, words):
    with pytest.raises(SpecSyntaxError) as info:
        parse_yaml(text, "hint.yaml")
    assert (info.value.location.line, info.value.location.column) == at
    for w in words:
        assert w in info.value.hint, info.value.hint


def test_a_line_that_lines_up_gets_no_indentation_guess():
    """The fault is text after a closed flow list, so the hint must not claim the line lines up
    with nothing when it lines up with the key above; it names the text YAML cannot read."""
    with pytest.raises(SpecSyntaxError) as info:
        parse_yaml("model:\n  source: random\n  name: [a, b] c\n", "hint.yaml")
    assert "lines up with no mapping" not in info.value.hint
    assert "ends before column 16" in info.value.hint and "'c'" in info.value.hint, info.value.hint
