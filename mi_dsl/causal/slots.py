"""A prompt's slot values as the causal model reads them: records with their fields (no torch).

A `PromptPair` keeps each slot's value as text (`values`, `corrupted_values`); a record slot's
fields are found again through its vocabulary: the item whose text it is. Two records of one
vocabulary with the same text but different fields cannot be told apart, so that is refused
(located at the vocabulary) rather than one of them read silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from ..dataset.build import slot_vocabularies
from ..dataset.slots import slot_types, vocabulary_values
from ..errors import SpecMeaningError
from ..expr import Env


@dataclass(frozen=True)
class SlotReader:
    """slot -> {text: item}; `env` lends expressions the tokenizer and the opposite pairs."""

    items: Mapping[str, Mapping[str, Any]]
    types: Mapping[str, str]
    paired: Tuple[str, ...]
    records: Mapping[str, Mapping[str, str]]
    opposites: Mapping[str, Mapping[str, str]]
    ambiguous: Mapping[str, Tuple[str, Any]]   # slot -> (a text two records share, where)

    def values(self, plain: Tuple[Tuple[str, str], ...]) -> Dict[str, Any]:
        """A prompt's (slot, text) pairs as slot -> item (a Record for record slots)."""
        out = {}
        for slot, text in plain:
            clash = self.ambiguous.get(slot, {}).get(text)
            if clash is not None:
                raise SpecMeaningError(f"two records of the vocabulary of slot '{slot}' have the text {text!r} "
                                       "but different fields; the causal model cannot tell which one a prompt "
                                       "holds", clash, hint="make each record's text unique (`text:` picks "
                                                            "the field records stand for)")
            out[slot] = self.items.get(slot, {}).get(text, text)
        return out

    def env(self, tokenizer) -> Env:
        return Env(tokenizer=tokenizer, opposite=lambda slot, word: self.opposites[slot][word])


def slot_reader(spec) -> SlotReader:
    """The reader of the spec's slots (every vocabulary item, before filters: a filter keeps items, it
    never changes one)."""
    mapping = slot_vocabularies(spec, spec.prompts["template"])
    types = slot_types(spec.vocabularies, mapping)
    items: Dict[str, Dict[str, Any]] = {}
    ambiguous: Dict[str, Dict[str, Any]] = {}
    opposites: Dict[str, Dict[str, str]] = {}
    for slot, name in mapping.items():
        vocab = spec.vocabularies[name]
        table: Dict[str, Any] = {}
        for item in vocabulary_values(vocab):
            text = str.__str__(item)
            if text in table and getattr(table[text], "fields", None) != getattr(item, "fields", None):
                ambiguous.setdefault(slot, {})[text] = spec.loc(*vocab.path)
            table.setdefault(text, item)
        items[slot] = table
        if vocab.pairs is not None:
            opposites[slot] = {**{a: b for a, b in vocab.pairs}, **{b: a for a, b in vocab.pairs}}
    return SlotReader(items, types.types, tuple(types.paired), types.records, opposites, ambiguous)
