"""Counterfactual examples: a base prompt, a source prompt, and each variable's label (no torch).

Where the source prompt comes from (an interchange analysis's `source:`):
  corrupted            each pair's corrupted prompt is the source of its clean prompt (the pairing
                       rule of `prompts.corrupt`: swap, resample with `where`, set)
  clean                the reverse: the clean prompt is the source, the corrupted one the base
                       (activation patching's denoising direction)
  {where: EXPR, seed}  each base prompt (a final pair's clean prompt) draws its source among the other
                       final pairs' clean prompts for which EXPR holds, over `base.NAME` and
                       `source.NAME` (slots and variables); seeded, in pair order

The label of variable V is the causal model's output on the base prompt with V set to its value on
the source prompt. The candidates an IIA is read over are every output the causal model gives on
the example: the base's, the source's and each variable's label (the same set whatever variables
an analysis tests).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import SpecMeaningError
from ..expr import Scope, compile_expression, expect_type
from .model import CausalModel
from .slots import SlotReader

BASE, SOURCE = "base", "source"


@dataclass(frozen=True)
class Example:
    base: Any                      # dataset Prompt (ids, spans)
    source: Any
    base_pair: int                 # index of the final pair the base prompt belongs to
    source_pair: int
    base_values: Tuple[Tuple[str, str], ...]   # slot texts of the base prompt (splits read them)
    base_label: int                # the causal model's output on the base prompt
    source_label: int
    labels: Tuple[Tuple[str, int], ...]        # variable -> counterfactual label
    candidates: Tuple[int, ...]

    def label(self, variable: str) -> int:
        return dict(self.labels)[variable]


@dataclass(frozen=True)
class SourceRule:
    """`source:` compiled: which prompt of a pair is the base, or a resampling condition."""

    kind: str                      # "corrupted", "clean" or "resample"
    where: Any = None              # compiled condition (resample)
    seed: int = 0
    text: str = ""

    def describe(self) -> str:
        if self.kind == "corrupted":
            return "base = each pair's clean prompt, source = its corrupted partner"
        if self.kind == "clean":
            return "base = each pair's corrupted prompt, source = its clean partner"
        return f"base = each final clean prompt, source = another one drawn (seed {self.seed}) where {self.text}"


def compile_source(spec, value, model: CausalModel, reader: SlotReader, path, seed: int) -> SourceRule:
    """An analysis's `source:` parameter, checked (a condition against the slots and variables)."""
    if isinstance(value, str):
        if value in ("clean", "corrupted") and "corrupt" not in spec.prompts:
            raise SpecMeaningError(f"source: {value} takes each pair's other prompt, but prompts.corrupt makes "
                                   "no corrupted prompts", spec.loc(*path),
                                   hint="resample sources from the dataset: source: {where: 'source.x != base.x'}")
        return SourceRule(value)
    text = value["where"]
    where_path = path + ("where",)
    names = {**reader.types, **{v.name: v.type for v in model.variables}}
    records = {**reader.records, "ns:" + BASE: names, "ns:" + SOURCE: names}
    scope = Scope.answer({BASE: "ns:" + BASE, SOURCE: "ns:" + SOURCE}, (), records)
    where = lambda off: spec.source.inside(where_path, off)  # noqa: E731
    compiled = compile_expression(text, scope, where=where)
    expect_type(compiled, "bool", where)
    if SOURCE not in compiled.names_used():
        raise SpecMeaningError("source.where never reads `source`, so it cannot choose between source prompts",
                               spec.loc(*where_path), hint="e.g. source.io != base.io")
    return SourceRule("resample", compiled, value.get("seed", seed), text)


class Builder:
    """Evaluates the causal model on prompts and makes the counterfactual examples of a pair set."""

    def __init__(self, model: CausalModel, reader: SlotReader, tokenizer):
        self.model, self.reader = model, reader
        self.env = reader.env(tokenizer)

    def values(self, plain) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(slot values, variable values) of a prompt."""
        slots = self.reader.values(plain)
        return slots, self.model.evaluate(slots, self.env)

    def example(self, base, source, base_pair: int, source_pair: int, base_plain, source_plain) -> Example:
        base_slots, base_vars = self.values(base_plain)
        _source_slots, source_vars = self.values(source_plain)
        base_label = self.model.output_of(base_vars, self.env)
        source_label = self.model.output_of(source_vars, self.env)
        labels = []
        for name in self.model.names:
            intervened = self.model.evaluate(base_slots, self.env, {name: source_vars[name]})
            labels.append((name, self.model.output_of(intervened, self.env)))
        candidates = tuple(dict.fromkeys([base_label, source_label] + [t for _, t in labels]))
        return Example(base, source, base_pair, source_pair, tuple(base_plain), base_label, source_label,
                       tuple(labels), candidates)

    def examples(self, pairs: Sequence[Any], rule: SourceRule) -> List[Example]:
        if rule.kind == "corrupted":
            return [self.example(p.clean, p.corrupted, i, i, p.values, p.corrupted_values) for i, p in enumerate(pairs)]
        if rule.kind == "clean":
            return [self.example(p.corrupted, p.clean, i, i, p.corrupted_values, p.values) for i, p in enumerate(pairs)]
        return self._resampled(pairs, rule)

    def _resampled(self, pairs: Sequence[Any], rule: SourceRule) -> List[Example]:
        rng = random.Random(rule.seed)
        spaces = [self._namespace(p.values) for p in pairs]
        out = []
        for i, pair in enumerate(pairs):
            choices = [j for j in range(len(pairs)) if j != i and self._allowed(rule, spaces[i], spaces[j])]
            if not choices:
                continue  # counted by the caller: the examples say which bases found a source
            j = rng.choice(choices)
            out.append(self.example(pair.clean, pairs[j].clean, i, j, pair.values, pairs[j].values))
        return out

    def _namespace(self, plain) -> Dict[str, Any]:
        slots, variables = self.values(plain)
        return {**slots, **variables}

    def _allowed(self, rule: SourceRule, base: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
        self.env.values = {BASE: base, SOURCE: source}
        return bool(rule.where.evaluate(self.env))


def split(examples: Sequence[Example], by: str, slot: Optional[str], test_fraction: float,
          seed: int) -> Tuple[List[int], List[int]]:
    """(train, test) example indices: a seeded shuffle of the examples, or of one slot's values (every
    example whose base prompt holds a held-out value is a test example: a split by template when the
    slot chooses the prompt's wording)."""
    rng = random.Random(seed)
    if by == "example":
        order = list(range(len(examples)))
        rng.shuffle(order)
        n_test = max(1, round(test_fraction * len(order))) if len(order) > 1 else 0
        return sorted(order[n_test:]), sorted(order[:n_test])
    values = sorted({dict(e.base_values)[slot] for e in examples})
    rng.shuffle(values)
    n_test = max(1, round(test_fraction * len(values))) if len(values) > 1 else 0
    held = set(values[:n_test])
    train = [i for i, e in enumerate(examples) if dict(e.base_values)[slot] not in held]
    test = [i for i, e in enumerate(examples) if dict(e.base_values)[slot] in held]
    return train, test
