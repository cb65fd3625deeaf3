"""The causal model's semantics and the counterfactual examples (mi_dsl/causal/, no torch model).

A two-variable model whose second variable reads the first: interchanging the first recomputes the
second from the base prompt (position hypothesis: the base's other name), interchanging the second
fixes it (identity hypothesis: the source's name). Labels are checked against the prompts' own
slot values, not against the code that made them. Splits hold out what they say, with a seed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mi_dsl.causal import Builder, SourceRule, compile_source, load_causal_model, split
from mi_dsl.compile import prepare

SPEC = """\
version: 1
model: {{source: pretrained, name: mi-dsl-tests/no-such-model, prepend_bos: true, tokenizer: {tokenizer}}}
vocabularies:
  names: {{items: [cats, dogs, owls, mice]}}
prompts:
  template: "{{a}} {{b}} {{s}}"
  slots: {{a: names, b: names, s: names}}
  where: 'a != b and (s == a or s == b)'
  answer: 'first_token(" " + (b if s == a else a))'
  foil: 'first_token(" " + s)'
causal_model:
  variables:
    io_first: 's == b'
    io: 'a if io_first else b'
  output: 'first_token(" " + io)'
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_tokenizer):
    path = Path(tmp_path_factory.mktemp("causal")) / "spec.yaml"
    path.write_text(SPEC.format(tokenizer=tiny_tokenizer))
    return prepare(str(path))


def token(prepared, word: str) -> int:
    return prepared.tokenizer.encode(" " + word)[0]


def test_interchanging_an_upstream_variable_recomputes_the_ones_below(prepared):
    model, reader = load_causal_model(prepared.spec)
    rule = compile_source(prepared.spec, {"where": "source.a != base.a and source.io_first != base.io_first"},
                          model, reader, ("analyses",), 0)
    examples = Builder(model, reader, prepared.tokenizer).examples(prepared.dataset.pairs, rule)
    assert len(examples) == len(prepared.dataset.pairs) == 24
    for example in examples:
        base = dict(example.base_values)
        source = dict(prepared.dataset.pairs[example.source_pair].values)
        assert base["a"] != source["a"] and (base["s"] == base["b"]) != (source["s"] == source["b"])
        other = base["s"]  # the base's subject: the name the *position* of the source's IO points at
        source_io = source["b"] if source["s"] == source["a"] else source["a"]
        assert example.label("io_first") == token(prepared, other)
        assert example.label("io") == token(prepared, source_io)
        assert example.base_label == prepared.dataset.pairs[example.base_pair].answers[0]
        assert set(example.candidates) == {example.base_label, example.source_label, token(prepared, other)}


def test_corrupted_sources_pair_each_clean_prompt_with_its_partner(prepared):
    model, reader = load_causal_model(prepared.spec)
    pairs = prepared.dataset.pairs
    # no corruption: the corrupted prompt is the clean one, so every label is the base's own output
    examples = Builder(model, reader, prepared.tokenizer).examples(pairs, SourceRule("corrupted"))
    assert all(e.base is p.clean and e.source is p.corrupted for e, p in zip(examples, pairs))
    assert all(len(e.candidates) == 1 for e in examples)


def test_splits_hold_out_examples_or_a_slots_values_with_a_seed(prepared):
    model, reader = load_causal_model(prepared.spec)
    rule = compile_source(prepared.spec, {"where": "source.a != base.a"}, model, reader, ("analyses",), 0)
    examples = Builder(model, reader, prepared.tokenizer).examples(prepared.dataset.pairs, rule)
    train, test = split(examples, "example", None, 0.25, seed=1)
    assert sorted(train + test) == list(range(len(examples))) and len(test) == 6
    assert split(examples, "example", None, 0.25, seed=1) == (train, test)
    assert split(examples, "example", None, 0.25, seed=2) != (train, test)
    train, test = split(examples, "slot", "a", 0.25, seed=1)
    held = {dict(examples[i].base_values)["a"] for i in test}
    assert len(held) == 1 and not held & {dict(examples[i].base_values)["a"] for i in train}


def test_the_das_estimate_counts_the_work():
    from mi_dsl.causal.cost import das_cost, layer_flops_per_token

    dims = dict(hidden=8, layers=4, heads=2, kv_heads=1, head_dim=4, intermediate=16, gated=False, vocab=100)
    per_token = layer_flops_per_token(dims, 5)
    assert per_token == 2.0 * (8 * 4 * (2 + 2) + 2 * 4 * 8 + 2 * 8 * 16 + 2 * 2 * 4 * 5)
    one = das_cost(dims, 20, 5, 1, epochs=1, batch_size=4, test_fraction=0.25, trainings=1, vocabulary=False,
                   flops_per_second=1.0)
    assert (one["train"], one["validation"], one["test"]) == (12, 3, 5)
    forward = 3 * 5 * per_token + 2 * 8 * 4       # layers 1..3, 5 tokens, the candidates' unembedding
    full = 4 * 5 * per_token + 2 * 8 * 4
    assert one["flops"] == pytest.approx(12 * forward * 2 + 3 * forward + 17 * forward + 3 * 20 * full)
    two = das_cost(dims, 20, 5, 1, epochs=2, batch_size=4, test_fraction=0.25, trainings=1, vocabulary=False,
                   flops_per_second=1.0)
    assert two["seconds"] - one["seconds"] == pytest.approx(12 * forward * 2 + 3 * forward)
