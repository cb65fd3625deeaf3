"""What a slot holds: a word, or a record with fields, and the types expressions see.

A slot bound to a vocabulary of records has the type "rec:VOCAB" and its values are
`Record`s (strings that carry their fields), so `{country}` renders the text and
`country.capital` reads a field. A vocabulary of opposite pairs is records too, with one
field, `opposite` (so `opposite(size)` and `size.opposite` agree); plain words are "str".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from ..errors import SpecWarning
from ..expr import Scope
from ..expr.values import Record
from ..spec.vocab import VocabSpec

CORRUPTED = "corrupted"  # answers read the corrupted prompt's values as corrupted.SLOT


@dataclass(frozen=True)
class SlotTypes:
    types: Dict[str, str]                   # slot -> expression type
    records: Dict[str, Dict[str, str]]      # record type -> field -> type
    paired: List[str]                       # slots whose vocabulary is opposite pairs

    def restricted(self, slots) -> "SlotTypes":
        return SlotTypes({s: self.types[s] for s in slots}, self.records, [s for s in self.paired if s in slots])

    def scope(self, context: str = "a template", tokens: bool = False,
              extra: Optional[Mapping[str, str]] = None) -> Scope:
        return Scope.template({**self.types, **(extra or {})}, self.paired, self.records, context, tokens)

    def answer_scope(self) -> Scope:
        """Answers and foils: the clean values, and the corrupted ones as corrupted.SLOT."""
        types, records = dict(self.types), dict(self.records)
        if CORRUPTED not in types:
            records["ns:" + CORRUPTED] = dict(self.types)
            types[CORRUPTED] = "ns:" + CORRUPTED
        return Scope.answer(types, self.paired, records)


def record_type(vocab: VocabSpec):
    """(type, fields) of a vocabulary's items: ("str", None) for plain words."""
    if vocab.records is not None:
        return "rec:" + vocab.name, vocab.fields
    if vocab.pairs is not None:
        return "rec:" + vocab.name, {"opposite": "str"}
    return "str", None


def slot_types(vocabularies: Mapping[str, VocabSpec], slots_to_vocab: Mapping[str, str]) -> SlotTypes:
    types, records, paired = {}, {}, []
    for slot, name in slots_to_vocab.items():
        vocab = vocabularies[name]
        type_, fields = record_type(vocab)
        types[slot] = type_
        if fields is not None:
            records[type_] = dict(fields)
        if vocab.pairs is not None:
            paired.append(slot)
    return SlotTypes(types, records, paired)


def vocabulary_values(vocab: VocabSpec) -> List[str]:
    """The vocabulary's items as slot values: Records for records and pairs, else strings."""
    if vocab.records is not None:
        return [Record(text, record) for text, record in zip(vocab.items, vocab.records)]
    if vocab.pairs is not None:
        partner = {**{a: b for a, b in vocab.pairs}, **{b: a for a, b in vocab.pairs}}
        return [Record(word, {"opposite": partner[word]}) for word in vocab.items]
    return list(vocab.items)


def orphan_slots(spec) -> List[str]:
    """Slots `prompts.slots` declares that no template names (a renamed key leaves one behind)."""
    texts = [spec.prompts["template"], spec.prompts.get("corrupt", {}).get("template", "")]
    used = {name for text in texts for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)}
    return [slot for slot in spec.prompts.get("slots", {}) if slot not in used]


def orphan_warnings(spec) -> List[SpecWarning]:
    return [SpecWarning(f"prompts.slots declares the slot '{slot}', but no template uses it; it plays no part",
                        spec.source.key(("prompts", "slots", slot))) for slot in orphan_slots(spec)]


def naming_orphans(spec, err):
    """A template's unknown slot when `prompts.slots` declares one no template uses: name that one (a
    renamed key), not the nearest vocabulary name."""
    orphans = orphan_slots(spec)
    if err.message.startswith("unknown slot") and orphans:
        declared = spec.loc("prompts", "slots", orphans[0])
        err.message = (err.message.split(";")[0] + f"; prompts.slots declares '{orphans[0]}' "
                       f"({declared.seen_from(err.location)}), which no template uses: was it renamed?")
        err.hint = f"use {{{orphans[0]}}} here, or name the slot in prompts.slots as the template does"
    return err
