"""Property test: specs generated from the JSON Schema, then randomly mutated, never make
`mi-run validate` raise anything but mi-dsl's own errors (exit 0 or 2, never a crash)."""
from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_dsl.cli import main
from mi_dsl.spec.schema import build_schema

SCHEMA = build_schema()
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=30), st.lists(st.text(max_size=5), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


WORDS = st.sampled_from(["birds", "fish", "Dogs", "Cows", "herbivorous", "carnivorous", "x", ""])
TEXTS = st.one_of(
    st.sampled_from(['ntokens(" " + item) == 1', 'first_token(" " + descriptor)', "clean.logit_diff > 3",
                     "All {category} are {descriptor}.", "{noun} are", "L8H2", "top(head_attribution, 3)",
                     "final", "descriptor[0]", "embedded", "tiny", "gpt_neox", "logit_diff"]),
    st.text(max_size=20))


def from_schema(node, depth=0):
    """A small generator of values for mi-dsl's schema (objects, arrays, oneOf, enums, if/then)."""
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:
        return st.one_of([from_schema(b, depth) for b in node["oneOf"]])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**node, "type": k}, depth) for k in kind])
    if kind == "object" and depth < 6:
        return _objects(node, depth)
    if kind == "array" and depth < 6:
        items = node.get("items", {"type": "string"})
        if items.get("allOf"):  # analyses: pick a kind, then its parameters
            kinds = [entry["then"] for entry in items["allOf"]]
            return st.lists(st.one_of([_objects(k, depth + 1) for k in kinds]), max_size=3)
        return st.lists(from_schema(items, depth + 1), min_size=node.get("minItems", 0), max_size=4)
    if kind == "integer":
        return st.integers(node.get("minimum", -3), 200)
    if kind == "number":
        return st.floats(0.01, 100)
    if kind == "boolean":
        return st.booleans()
    return TEXTS


def _objects(node, depth):
    props = node.get("properties", {})
    required = node.get("required", [])
    extra = node.get("additionalProperties")

    @st.composite
    def build(draw):
        out = {k: draw(from_schema(props[k], depth + 1)) for k in required if k in props}
        for key in draw(st.lists(st.sampled_from(sorted(props)), max_size=len(props), unique=True)) if props else []:
            out[key] = draw(from_schema(props[key], depth + 1))
        if isinstance(extra, dict):
            for name in draw(st.lists(st.sampled_from(["categories", "descriptors", "nouns"]), max_size=3,
                                      unique=True)):
                out[name] = draw(from_schema(extra, depth + 1))
        return out

    return build()


@st.composite
def mutated_specs(draw):
    spec = draw(from_schema(SCHEMA))
    spec = copy.deepcopy(spec)
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[path[-1]] = draw(JUNK)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(path[-1])
    return spec


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_specs())
def test_generated_and_mutated_specs_never_crash(tmp_path_factory, spec):
    folder = tmp_path_factory.mktemp("prop")
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    try:
        code = main(["validate", str(path)])
    except SystemExit as exit_:  # argparse never sees user data here, but be explicit
        pytest.fail(f"validate exited via SystemExit({exit_.code})")
    assert code in (0, 2)
