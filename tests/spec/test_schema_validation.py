"""mi_dsl.spec.schema and mi_dsl.spec.validate: the JSON Schema, and which single fault a user is told first."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, SPECS
from mi_dsl.errors import SchemaError
from mi_dsl.spec.loader import parse_yaml
from mi_dsl.spec.schema import build_schema
from mi_dsl.spec.validate import validate_document

VALID = """\
version: 1
model:
  source: embedded
  prepend_bos: true
vocabularies:
  animal: {items: [cats, dogs]}
  size: {pairs: [[big, small]]}
prompts:
  template: "The {animal} are {size}."
  answer: 'first_token(" " + size)'
  foil: 'first_token(" " + opposite(size))'
"""


def explain(text: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        validate_document(parse_yaml(text, "spec.yaml"))
    return info.value


def located(err: SchemaError):
    return err.location.line, err.location.column


# --------------------------------------------------------------------------- the schema itself

def _objects(node, path=()):
    """Every subschema that describes an object with properties."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            yield path, node
        for key, child in node.items():
            yield from _objects(child, path + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _objects(child, path + (i,))


def test_the_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(build_schema())


def test_every_property_is_described_and_unknown_keys_are_refused():
    for path, obj in _objects(build_schema()):
        closed = obj.get("additionalProperties") is False or isinstance(obj.get("additionalProperties"), dict)
        assert closed or "allOf" in obj, path  # an analysis item is closed by its kind's `then` part
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{path}/{name} has no description"


def test_every_registered_analysis_kind_is_in_the_schema():
    from mi_dsl.core.registry import load_all

    kinds = build_schema()["properties"]["analyses"]["items"]["properties"]["kind"]["enum"]
    assert kinds == sorted(load_all())


def test_the_committed_schema_file_is_up_to_date():
    committed = json.loads((REPO / "schemas" / "spec.schema.json").read_text())
    assert committed == build_schema(), "regenerate it: mi-run schema > schemas/spec.schema.json"


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_fit_the_schema(spec):
    validate_document(parse_yaml(spec.read_text(), str(spec)))
    jsonschema.validate(yaml.safe_load(spec.read_text()), build_schema())  # and by a plain validator


def test_a_valid_spec_passes():
    validate_document(parse_yaml(VALID, "spec.yaml"))


# --------------------------------------------------------------------------- messages

@pytest.mark.parametrize("change, words, where", [
    # (old, new) in VALID -> words of the message, (line, column)
    (("  prepend_bos: true\n", "  prepend_bos: true\n  dtpye: float32\n"),
     "unknown key 'dtpye' in 'model'; did you mean 'dtype'?", (5, 3)),
    (("prepend_bos: true", "prepend_boss: true"),  # a typo explains the "missing" key it meant
     "unknown key 'prepend_boss' in 'model'; did you mean 'prepend_bos'?", (4, 3)),
    (("  prepend_bos: true\n", ""), "'model' is missing the required key 'prepend_bos'", (3, 3)),
    (("source: embedded", "source: embeded"), "unknown value 'embeded' for 'source'; did you mean 'embedded'?",
     (3, 11)),
    (("version: 1", "version: 3"), "unsupported spec language version 3", (1, 10)),
    (("version: 1", "version: '1'"), "unsupported spec language version '1'", (1, 10)),
    (("  prepend_bos: true\n", "  prepend_bos: yes please\n"), "'prepend_bos' must be true or false, not a string",
     (4, 16)),
    (("{items: [cats, dogs]}", "{items: []}"), "'items': [] should be non-empty", (6, 19)),
    (("{items: [cats, dogs]}", "{items: [cats, 3]}"), "item 2 of 'items' must be a mapping or a string, not an integer",
     (6, 26)),
    (("[[big, small]]", "[[big, small, huge]]"), "is too long", (7, 18)),
    (("  size:", "  2size:"), "'2size' in 'vocabularies' is not a valid name", (7, 3)),
    (("  prepend_bos: true\n", "  prepend_bos: true\n  processing: {fold: true}\n"),
     "unknown key 'fold' in 'processing'; did you mean 'fold_ln'?", (5, 16)),
    (("  prepend_bos: true\n", "  prepend_bos: true\n  processing: all\n"),
     "'processing' must be true or false or a mapping, not a string", (5, 15)),
    (("  prepend_bos: true\n", "  prepend_bos: true\n  device: tpu\n"), "'device' value 'tpu' is not allowed", (5, 11)),
])
def test_schema_messages(change, words, where):
    err = explain(VALID.replace(*change))
    assert words in err.message, err.format()
    assert located(err) == where, err.format()


@pytest.mark.parametrize("extra, words, where", [
    ("run: {batch_size: 0}\n", "'batch_size': 0 is less than the minimum of 1", (12, 19)),
    ("run: {batch_size: fast}\n", "'batch_size' must be 'auto' or an integer, not a string", (12, 19)),
    ("run: {memory_gb: 0}\n", "'memory_gb': 0 is less than or equal to the minimum of 0", (12, 18)),
    ("pipeline:\n  - sample: 5\n", "'sample' must be a mapping, not an integer", (13, 13)),
    ("pipeline:\n  - {keep: 'clean.logit_diff > 0', symmetric: true}\n",
     "takes exactly one of the keys 'keep', 'sample', 'symmetric'; found both 'keep' and 'symmetric'", (13, 36)),
    ("pipeline:\n  - symetric: true\n", "found 'symetric'", (13, 5)),
    ("analyses: {kind: logit_lens}\n", "'analyses' must be a list, not a mapping", (12, 11)),
    ("analyses:\n  - id: lens\n", "item 1 of 'analyses' is missing the required key 'kind'", (13, 5)),
    ("analyses:\n  - kind: head_attribution\n    top_k: 0\n", "'top_k': 0 is less than the minimum of 1", (14, 12)),
    ("name: my spec\n", "'name' value 'my spec' is not a valid name", (12, 7)),
    ("metric: logitdiff\n", "did you mean 'logit_diff'?", (12, 9)),
])
def test_schema_messages_for_later_sections(extra, words, where):
    err = explain(VALID + extra)
    assert words in err.message, err.format()
    assert located(err) == where, err.format()


def test_the_deepest_fault_is_told_first():
    err = explain(VALID.replace("version: 1\n", "version: 1\nseed: x\n") + "run: {batch_size: 0}\n")
    assert "'batch_size'" in err.message  # depth 2 beats the top-level seed


def test_a_document_that_is_not_a_mapping():
    assert "found a string" in explain("just a sentence\n").message
    err = explain("")
    assert "the file is empty" in err.message and located(err) == (1, 1)


def test_a_required_key_hint_is_its_description():
    err = explain(VALID.replace("  foil: 'first_token(\" \" + opposite(size))'\n", ""))
    assert "missing the required key 'foil'" in err.message
    assert "wrong-answer token" in err.hint
