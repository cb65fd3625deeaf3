"""Where a spec's prompt pairs come from: `prompts:` (a template over vocabularies,
dataset/build.py) or `dataset:` (fixed pairs from a file, dataset/pairs_file.py).

The later stages ask here, so they never care which: both give the same `Dataset`
(pairs with answer and foil tokens and named token spans), whether the answers are
continuations, the names position selectors may use, and where answer faults point.
"""
from __future__ import annotations

from typing import List

from ..errors import Location
from . import build, pairs_file


def from_file(spec) -> bool:
    return "dataset" in spec.data


def build_dataset(spec, tokenizer) -> build.Dataset:
    if from_file(spec):
        return pairs_file.build_pairs_dataset(spec, tokenizer)
    return build.build_dataset(spec, tokenizer)


def check_without_tokenizer(spec) -> None:
    """The checks that need no tokenizer (`mi-run validate` without one)."""
    if from_file(spec):
        pairs_file.check_pairs_file(spec)
    else:
        build.check_without_tokenizer(spec)


def answers_are_continuation(spec) -> bool:
    if from_file(spec):
        return pairs_file.answers_are_continuations(spec)
    return build.answers_are_continuation(spec)


def slot_names(spec) -> List[str]:
    """The names position selectors may use: a template's slots, or a pair file's named spans."""
    if from_file(spec):
        return pairs_file.span_names(spec)
    return list(build.slot_vocabularies(spec, spec.prompts["template"]))


def answer_location(spec, key: str = "answer") -> Location:
    """Where the spec says what the answer (or foil) is."""
    if from_file(spec):
        return pairs_file.dataset_location(spec, "answers")
    return spec.loc("prompts", key)
