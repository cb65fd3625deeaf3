"""Guidance that does not mislead (issue 24, item 5): opposite(x) and x.opposite are one thing
wherever a word of a pairs vocabulary is (templates, answers, corrupted.SLOT, a vocabulary's own
filter); a renamed `slots:` key is named instead of the nearest vocabulary, and a slot no template
uses is flagged; did-you-mean suggests the same technique only (path_patching is not a typo of
activation_patching)."""
from __future__ import annotations

import pytest

from mi_dsl.compile import prepare
from mi_dsl.errors import MiError
from mi_dsl.suggest import did_you_mean

from tests.conftest import SPECS

TUTORIAL = (SPECS / "tutorial.yaml").read_text()
FOIL = "foil: 'first_token(\" \" + opposite(descriptor))'"
FILTER = "filter: 'ntokens(\" \" + item) == 2'"


def variant(tmp_path, *replacements):
    text = TUTORIAL
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def pairs_of(path):
    return [(p.clean.ids, p.corrupted.ids, p.answers, p.foils) for p in prepare(str(path)).dataset.pairs]


def test_opposite_and_dot_opposite_are_one_thing_everywhere(tmp_path):
    plain = pairs_of(variant(tmp_path))
    for filter_text in ("ntokens(\" \" + opposite(item)) == 2", "ntokens(\" \" + item.opposite) == 2"):
        assert pairs_of(variant(tmp_path, (FILTER, f"filter: '{filter_text}'"))) == plain
    assert pairs_of(variant(tmp_path, (FOIL, "foil: 'first_token(\" \" + descriptor.opposite)'"))) == plain
    swapped_back = "foil: 'first_token(\" \" + opposite(corrupted.descriptor))'"  # the clean descriptor again
    with pytest.raises(MiError, match="answer and foil are the same token"):
        prepare(str(variant(tmp_path, (FOIL, swapped_back))))
    with pytest.raises(MiError, match="slot 'noun' has no opposite pairs"):
        prepare(str(variant(tmp_path, (FOIL, "foil: 'first_token(\" \" + opposite(noun))'"))))


def test_a_renamed_slots_key_is_named_and_an_unused_one_flagged(tmp_path):
    slots = "slots: {category: categories, descriptor: descriptors, noun: nouns}"
    renamed = variant(tmp_path, (slots, "slots: {category: categories, descriptor: descriptors, animal: nouns}"))
    with pytest.raises(MiError) as err:
        prepare(str(renamed))
    assert "unknown slot 'noun'" in err.value.message and "declares 'animal'" in err.value.message
    assert "did you mean 'nouns'" not in err.value.message and "{animal}" in err.value.hint
    extra = variant(tmp_path, (slots, slots.replace("}", ", kind: categories}")))
    warnings = prepare(str(extra)).dataset.warnings
    assert [w.message for w in warnings] == ["prompts.slots declares the slot 'kind', but no template uses it; "
                                             "it plays no part"]
    assert warnings[0].location.line == next(i for i, line in enumerate(extra.read_text().splitlines(), 1)
                                             if "slots:" in line)


def test_did_you_mean_suggests_the_same_technique_only():
    kinds = ["activation_patching", "attribution_patching", "logit_lens", "head_attribution", "ablation"]
    assert "did you mean" not in did_you_mean("path_patching", kinds)
    assert did_you_mean("activaton_patching", kinds) == "did you mean 'activation_patching'?"
    assert did_you_mean("logitlens", kinds) == "did you mean 'logit_lens'?"
    assert did_you_mean("descriptr", ["descriptor", "noun"]) == "did you mean 'descriptor'?"
