"""The dataset compiler: vocabularies -> filtered words -> prompts -> clean/corrupted pairs.

This is the seed notebook's "Data Setup" (check_len, generate_combinations, the
opposite pairing) as data: every prompt with its corrupted partner, answer and foil
token ids, and the token span of every slot. No torch; needs only a tokenizer.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..limits import WorkExceeded, charge, current, metered
from ..errors import ExpressionError, SpecMeaningError, SpecWarning
from ..expr import Env, Scope, compile_expression, expect_type
from ..spec.resolve import Spec, VocabSpec
from ..suggest import unknown
from .budget import MeteredTokenizer, check_size, token_spans, too_long
from .answers import answers_are_continuations, check_continuations, compile_answer, set_warning
from .corrupt import Corruption
from .slots import (CORRUPTED, SlotTypes, naming_orphans, orphan_warnings, record_type, slot_types,
                    vocabulary_values)
from .templates import Template, parse_template
from .tokenizer import Tokenizer

Spans = Dict[str, Tuple[Tuple[int, int], ...]]  # slot -> token spans of its occurrences, BOS included


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: Tuple[int, ...]
    spans: Spans


@dataclass(frozen=True)
class PromptPair:
    clean: Prompt
    corrupted: Prompt
    answers: Tuple[int, ...]   # the answer token, the answer token set, or its continuation's tokens in order
    foils: Tuple[int, ...]     # the foil token, the foil token set, or its continuation's tokens in order
    values: Tuple[Tuple[str, str], ...]  # slot values of the clean prompt
    corrupted_values: Tuple[Tuple[str, str], ...] = ()  # slot values of the corrupted prompt
    continuation: bool = False  # answers and foils are continuations (continuation(...)), not token sets

    def swapped(self) -> "PromptPair":
        """The corrupted prompt as a clean one, answer and foil swapped (symmetric pairing); the
        slot values swap with the prompts, so `values` always describe `clean`."""
        return PromptPair(self.corrupted, self.clean, self.foils, self.answers, self.corrupted_values,
                          self.values, self.continuation)

    @property
    def answer(self) -> int:
        """The single answer token (code that cannot read token sets or continuations asks here and is refused)."""
        return _single(self.answers, "answer", self.continuation)

    @property
    def foil(self) -> int:
        return _single(self.foils, "foil", self.continuation)


def _plain_values(values) -> Tuple[Tuple[str, str], ...]:
    """(slot, text) pairs; a record slot's value as its text."""
    return tuple((s, str.__str__(v)) for s, v in values.items())


def _single(tokens: Tuple[int, ...], what: str, continuation: bool = False) -> int:
    if len(tokens) != 1 or continuation:
        from ..errors import RunError

        kind = "a continuation" if continuation else "a set"
        raise RunError(f"this needs a single {what} token, but the {what} is {kind} of {len(tokens)} tokens")
    return tokens[0]


def as_token_set(value) -> Tuple[int, ...]:
    """An answer expression's value (a token id or a token set) as a tuple of ids."""
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),)


@dataclass
class VocabReport:
    name: str
    before: int
    after: int
    kept: List[str]
    dropped: List[str]
    duplicates: List[str]


@dataclass
class Dataset:
    pairs: List[PromptPair]
    vocab: Dict[str, VocabReport]
    slots: List[str]
    warnings: List[SpecWarning] = field(default_factory=list)

    @property
    def token_lengths(self) -> List[int]:
        return sorted({len(p.clean.ids) for p in self.pairs} | {len(p.corrupted.ids) for p in self.pairs})


# ----------------------------------------------------------------------------- vocabularies

def filter_vocabulary(vocab: VocabSpec, spec: Spec, tokenizer: Optional[Tokenizer]) -> VocabReport:
    """Apply the vocabulary's filter; a pair survives only when both words pass."""
    words = vocabulary_values(vocab)
    duplicates = [str.__str__(w) for w, n in Counter(words).items() if n > 1]
    keep = _filter_predicate(vocab, spec, tokenizer)
    if vocab.pairs is not None:  # each word as the record it is in a slot: item.opposite, opposite(item)
        as_item = dict(zip(vocab.items, words))
        pairs = [p for p in vocab.pairs if keep(as_item[p[0]]) and keep(as_item[p[1]])]
        if vocab.dedupe:
            pairs = list(dict.fromkeys(pairs))
        kept = [as_item[w] for p in pairs for w in p]
    else:
        kept = [w for w in words if keep(w)]
        if vocab.dedupe:
            kept = list(dict.fromkeys(kept))
    kept_set = set(kept)
    dropped = [w for w in words if w not in kept_set]
    if not kept:
        where = spec.loc(*vocab.path, "filter") if vocab.filter else spec.loc(*vocab.path)
        raise SpecMeaningError(
            f"vocabulary '{vocab.name}' is empty after its filter: all {len(words)} items were dropped "
            f"({', '.join(words[:6])}{', ...' if len(words) > 6 else ''})", where,
            hint="loosen the filter, or check the tokenizer is the one you meant")
    return VocabReport(vocab.name, len(words), len(kept), kept, dropped, duplicates)


def _filter_predicate(vocab: VocabSpec, spec: Spec, tokenizer: Optional[Tokenizer]):
    if not vocab.filter:
        return lambda word: True
    path = vocab.path + ("filter",)
    type_, fields = record_type(vocab)
    scope = Scope.filter(record=type_, records={type_: fields} if fields else None)
    compiled = compile_expression(vocab.filter, scope, where=lambda off: spec.source.inside(path, off))
    expect_type(compiled, "bool", lambda off: spec.source.inside(path, off))
    env = Env(tokenizer=tokenizer)

    def keep(word: str) -> bool:
        env.values = {"item": word}
        return bool(compiled.evaluate(env))

    return keep


# ----------------------------------------------------------------------------- templates and slots

def slot_vocabularies(spec: Spec, template_text: str) -> Dict[str, str]:
    """slot -> vocabulary name, from prompts.slots or the slot's own name."""
    mapping = dict(spec.prompts.get("slots", {}))
    for slot, vocab in mapping.items():
        if vocab not in spec.vocabularies:
            raise SpecMeaningError(unknown("vocabulary", vocab, spec.vocabularies, f"for slot '{slot}'"),
                                   spec.loc("prompts", "slots", slot))
    for name in spec.vocabularies:
        mapping.setdefault(name, name)
    return mapping


def compile_template(spec: Spec, key: Tuple[str, ...], types: SlotTypes) -> Template:
    text = spec.data
    for part in key:
        text = text[part]
    template = parse_template(text, types.scope(), lambda off: spec.source.inside(key, off))
    if not template.slots and key[-2:] != ("corrupt", "template"):  # a constant corrupted prompt is fine
        raise SpecMeaningError("the template has no {slot}; a prompt set needs at least one slot, "
                               "e.g. 'All {category} are ...'", spec.loc(*key))
    return template


# ----------------------------------------------------------------------------- the whole dataset

@dataclass(frozen=True)
class _Layout:
    """The templates and the slots of the product (the clean and the corrupted template's)."""

    slots_to_vocab: Dict[str, str]
    types: SlotTypes       # of the product's slots
    template: Template
    corrupted: Optional[Template]
    order: List[str]


def _layout(spec: Spec) -> _Layout:
    slots_to_vocab = slot_vocabularies(spec, spec.prompts["template"])
    types = slot_types(spec.vocabularies, slots_to_vocab)
    try:
        template = compile_template(spec, ("prompts", "template"), types)
        corrupted = None
        if "template" in spec.prompts.get("corrupt", {}):
            corrupted = compile_template(spec, ("prompts", "corrupt", "template"), types)
    except ExpressionError as err:
        raise naming_orphans(spec, err) from None
    used = list(dict.fromkeys(template.slots + (corrupted.slots if corrupted else [])))
    order = _product_order(spec, used)
    return _Layout(slots_to_vocab, types.restricted(order), template, corrupted, order)


def build_dataset(spec: Spec, tokenizer: Tokenizer) -> Dataset:
    """The dataset, its work metered and bounded (mi_dsl/limits.py: prompts, prompt_tokens,
    dataset_work), so building it is linear in the spec and ends in seconds on any input."""
    if "prompts" not in spec.data:  # a spec of dataset-free analyses (head detection)
        return Dataset([], {}, [])
    with metered():
        try:
            return _build_dataset(spec, MeteredTokenizer(tokenizer))
        except WorkExceeded as err:
            raise err.at(spec.loc("prompts", "template")) from None


def _build_dataset(spec: Spec, tokenizer: Tokenizer) -> Dataset:
    layout = _layout(spec)
    slots_to_vocab, order = layout.slots_to_vocab, layout.order
    reports = {name: filter_vocabulary(v, spec, tokenizer) for name, v in spec.vocabularies.items()}
    warnings = [SpecWarning(f"vocabulary '{r.name}' lists {', '.join(repr(d) for d in r.duplicates)} more than "
                            "once; duplicates are kept (set dedupe: true to drop them)",
                            spec.loc("vocabularies", r.name))
                for r in reports.values() if r.duplicates and not spec.vocabularies[r.name].dedupe]
    pools = [reports[slots_to_vocab[s]].kept for s in order]
    check_size(spec, order, pools)
    builder = _PairBuilder(spec, tokenizer, layout, reports)
    allowed = _combination_filter(spec, layout.types, builder.env)
    combos = (dict(zip(order, combo)) for combo in itertools.product(*pools))
    pairs = [builder.pair(values) for values in combos if allowed(values)]
    if not pairs:
        raise SpecMeaningError("no slot combination satisfies prompts.where", spec.loc("prompts", "where"))
    dataset = Dataset(pairs, reports, order, warnings + builder.warnings + orphan_warnings(spec))
    _check_answers(spec, tokenizer, dataset)
    keep_equal_lengths(spec, dataset)
    return dataset


def answers_are_continuation(spec: Spec) -> bool:
    """Whether the spec's answer and foil are continuation(...)s (no tokenizer needed; mixing is refused)."""
    if "prompts" not in spec.data:
        return False
    types = _layout(spec).types
    return answers_are_continuations(spec, compile_answer(spec, "answer", types), compile_answer(spec, "foil", types))


def check_without_tokenizer(spec: Spec) -> None:
    """The dataset checks that need no tokenizer (slots, templates, filters, answer, foil,
    corruption), for `mi-run validate` when no tokenizer is available offline."""
    if "prompts" not in spec.data:
        return
    layout = _layout(spec)
    for vocab in spec.vocabularies.values():
        _filter_predicate(vocab, spec, None)
    unfiltered = {name: VocabReport(name, len(v.items), len(v.items), vocabulary_values(v), [], [])
                  for name, v in spec.vocabularies.items()}
    builder = _PairBuilder(spec, None, layout, unfiltered)
    _combination_filter(spec, layout.types, builder.env)


def _combination_filter(spec: Spec, types: SlotTypes, env: Env):
    """prompts.where: a condition over the slot values of one prompt (e.g. io != s); `env`
    lends it the tokenizer and the opposite pairs."""
    text = spec.prompts.get("where")
    if text is None:
        return lambda values: True
    path = ("prompts", "where")
    compiled = compile_expression(text, types.scope("prompts.where", tokens=True),
                                  where=lambda off: spec.source.inside(path, off))
    expect_type(compiled, "bool", lambda off: spec.source.inside(path, off))

    def allowed(values: Dict[str, str]) -> bool:
        env.values = values
        return bool(compiled.evaluate(env))

    return allowed


def _product_order(spec: Spec, used: List[str]) -> List[str]:
    declared = [s for s in spec.prompts.get("slots", {}) if s in used]
    return declared + [s for s in used if s not in declared]


class _PairBuilder:
    """Renders clean and corrupted prompts and evaluates answer and foil for slot values."""

    def __init__(self, spec: Spec, tokenizer: Tokenizer, layout: _Layout, reports):
        self.spec, self.tokenizer, self.template = spec, tokenizer, layout.template
        self.slots_to_vocab, self.types = layout.slots_to_vocab, layout.types
        self.opposites = self._opposite_table()
        self.env = Env(tokenizer=tokenizer, opposite=self._opposite)
        self.answer = compile_answer(spec, "answer", self.types)
        self.foil = compile_answer(spec, "foil", self.types)
        self.continuation = answers_are_continuations(spec, self.answer, self.foil)
        self.warnings = [w for w in (set_warning(spec, self.answer, "answer"), set_warning(spec, self.foil, "foil"))
                         if w]
        self.corrupt = None
        if "corrupt" in spec.prompts:
            pools = {s: reports[self.slots_to_vocab[s]].kept for s in layout.order}
            self.corrupt = Corruption(spec, spec.prompts["corrupt"], layout.template, layout.corrupted,
                                      layout.order, layout.types, pools, self.env, self._opposite)

    def _opposite_table(self) -> Dict[str, Dict[str, str]]:
        table = {}
        for slot, vocab in self.slots_to_vocab.items():
            pairs = self.spec.vocabularies[vocab].pairs
            if pairs is not None:
                table[slot] = {**{a: b for a, b in pairs}, **{b: a for a, b in pairs}}
        return table

    def _opposite(self, slot: str, word: str) -> str:
        return self.opposites[slot][word]

    def pair(self, values: Dict[str, str]) -> PromptPair:
        clean = self._prompt(self.template, values)
        corrupted_values, template = self.corrupt.apply(values) if self.corrupt else (values, self.template)
        corrupted = self._prompt(template, corrupted_values) if self.corrupt else clean
        self.env.values = values if CORRUPTED in values else {**values, CORRUPTED: corrupted_values}
        answers = as_token_set(self.answer.evaluate(self.env))
        foils = as_token_set(self.foil.evaluate(self.env))
        return PromptPair(clean, corrupted, answers, foils, _plain_values(values), _plain_values(corrupted_values),
                          self.continuation)

    def _prompt(self, template: Template, values: Dict[str, str]) -> Prompt:
        text, char_spans = template.render(values, self.env)
        charge(20 * len(char_spans))
        corrupted = template is not self.template
        return tokenized_prompt(text, [(slot, a, b) for slot, _occurrence, a, b in char_spans], self.tokenizer,
                                self.spec.model.prepend_bos,
                                lambda size: too_long(self.spec, text, size, corrupted))


def tokenized_prompt(text: str, char_spans, tokenizer: Tokenizer, prepend_bos: bool, refuse=None) -> Prompt:
    """A prompt's tokens and, per named span (name, char start, char end) in order, the tokens it
    overlaps (BOS included in the positions): templates and pair files share this one rule. A prompt
    over the bound of tokens per prompt (limits.py) is refused by `refuse(size)` (located by the caller)."""
    bound = current().prompt_tokens
    if refuse is None:
        def refuse(size):
            raise SpecMeaningError(f"a prompt of {size} ('{text[:60]}...') is longer than the bound of "
                                   f"{bound:,} tokens per prompt", None)
    if len(text) > 32 * bound:  # refused unread: no tokenizer makes fewer than 1 token per 32 characters
        refuse(f"{len(text):,} characters")
    ids, offsets = tokenizer.encode_with_offsets(text)
    shift = 0
    if prepend_bos:
        ids = [tokenizer.bos_id] + ids
        shift = 1
    if len(ids) > bound:
        refuse(f"{len(ids):,} tokens")
    spans: Dict[str, List[Tuple[int, int]]] = {}
    for slot, first, last in token_spans(offsets, [(slot, 0, a, b) for slot, a, b in char_spans]):
        spans.setdefault(slot, []).append((first + shift, last + shift) if last > first else (shift, shift))
    return Prompt(text, tuple(ids), {k: tuple(v) for k, v in spans.items()})


def _check_answers(spec: Spec, tokenizer: Tokenizer, dataset: Dataset) -> None:
    for pair in dataset.pairs:
        if pair.continuation:
            check_continuations(spec, tokenizer, pair)
            continue
        shared = [t for t in pair.answers if t in pair.foils]
        if not shared:
            continue
        token = tokenizer.token_str(shared[0])
        if len(pair.answers) == len(pair.foils) == 1:
            raise SpecMeaningError(
                f"answer and foil are the same token {shared[0]} ({token!r}) for the prompt "
                f"'{pair.clean.text}', so their logit difference is always 0", spec.loc("prompts", "foil"),
                hint="filter the vocabulary so each word and its opposite start with different tokens")
        raise SpecMeaningError(
            f"the answer and foil token sets share token {shared[0]} ({token!r}) for the prompt "
            f"'{pair.clean.text}'; a token cannot count for and against the answer at once",
            spec.loc("prompts", "foil"), hint="make the two sets disjoint")


def keep_equal_lengths(spec: Spec, dataset: Dataset, block: str = "prompts") -> None:
    """`equal_lengths: true` (opt-in): keep the pairs whose clean and corrupted prompts both
    have the most common token length, and say how many were dropped. Without it prompts of
    any lengths are kept: batches are padded and patching aligns positions by name (or
    refuses, at plan time, what it cannot align)."""
    if not spec.data[block].get("equal_lengths", False):
        return
    lengths = Counter(len(p.clean.ids) for p in dataset.pairs) + Counter(len(p.corrupted.ids) for p in dataset.pairs)
    if len(lengths) <= 1:
        return
    common = lengths.most_common(1)[0][0]
    kept = [p for p in dataset.pairs if len(p.clean.ids) == len(p.corrupted.ids) == common]
    dropped = [p for p in dataset.pairs if p not in kept]
    odd = next(q for p in dropped for q in (p.clean, p.corrupted) if len(q.ids) != common)
    if not kept:
        raise SpecMeaningError(
            f"equal_lengths: true keeps the pairs whose clean and corrupted prompts both have {common} tokens "
            f"(the most common length), but none has: lengths {sorted(lengths)}, e.g. '{odd.text}' "
            f"({len(odd.ids)} tokens)", spec.loc(block, "equal_lengths"),
            hint="remove equal_lengths (prompts of different lengths are padded and aligned by name), or "
                 "filter the vocabularies on token counts")
    dataset.pairs = kept
    dataset.warnings.append(SpecWarning(
        f"equal_lengths: kept {len(kept)} of {len(kept) + len(dropped)} prompt pairs ({common} tokens); dropped "
        f"{len(dropped)} of other lengths, e.g. '{odd.text}' ({len(odd.ids)} tokens)",
        spec.loc(block, "equal_lengths")))
