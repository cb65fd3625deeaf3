"""How a clean prompt's corrupted partner is made (`prompts.corrupt`).

The pairing rule: the corrupted prompt has the clean prompt's slot values, except the
slots `swap` (the opposite word), `resample` (a seeded draw from the slot's filtered
vocabulary, different from the clean value and satisfying `where`) and `set` (an
expression over the clean values) change; no slot changes twice. It is rendered with
`corrupt.template` when given, else with the clean template. Draws happen in the order
of the slot product, one per candidate prompt, so a seed gives the same pairs every time.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..limits import charge
from ..errors import SpecMeaningError
from ..expr import Env, compile_expression, expect_type
from ..expr.values import Record
from ..suggest import unknown
from .slots import SlotTypes
from .templates import Template

NEW = "new"  # resample's candidate in corrupt.where


class Corruption:
    """Compiled once from `prompts.corrupt`; `apply(values)` gives (corrupted values, template)."""

    def __init__(self, spec, corrupt: Dict[str, Any], template: Template, other: Optional[Template],
                 slots: List[str], types: SlotTypes, pools: Dict[str, List[str]], env: Env,
                 opposite: Callable[[str, str], str]):
        self.spec, self.template, self.slots, self.types = spec, (other or template), slots, types
        self.pools, self.env, self.opposite = pools, env, opposite
        _check_one_picker(spec, corrupt)
        self.swap = self._slot("swap", corrupt.get("swap"), paired=True)
        self.resample = self._slot("resample", corrupt.get("resample"))
        self.where = self._resample_condition(corrupt.get("where"))
        self.rng = random.Random(corrupt.get("seed", spec.seed))
        self.set = self._set_expressions(corrupt.get("set", {}), {self.swap, self.resample} - {None})
        if self.resample is not None and len(set(pools[self.resample])) < 2:
            raise SpecMeaningError(f"cannot resample slot '{self.resample}': its vocabulary has fewer than two "
                                   "distinct words after filtering", self._at("resample"))

    def _at(self, *keys):
        return self.spec.loc("prompts", "corrupt", *keys)

    def _slot(self, key: str, slot: Optional[str], paired: bool = False) -> Optional[str]:
        if slot is None:
            return None
        if slot not in self.slots:
            raise SpecMeaningError(unknown("slot", slot, self.slots, f"in corrupt.{key}"), self._at(key))
        if paired and slot not in self.types.paired:
            raise SpecMeaningError(f"corrupt.swap needs a slot whose vocabulary is a list of opposite "
                                   f"pairs; '{slot}' uses plain items", self._at(key),
                                   hint="write the vocabulary as `pairs:`, or corrupt with `resample:` or `set:`")
        return slot

    def _resample_condition(self, text: Optional[str]):
        if text is None:
            return None
        path = ("prompts", "corrupt", "where")
        where = lambda off: self.spec.source.inside(path, off)  # noqa: E731
        if NEW in self.types.types:
            raise SpecMeaningError(f"corrupt.where names the candidate `{NEW}`, but a slot is called '{NEW}' too",
                                   self._at("where"), hint=f"rename the slot '{NEW}'")
        scope = self.types.scope("corrupt.where", tokens=True, extra={NEW: self.types.types[self.resample]})
        compiled = compile_expression(text, scope, where)
        expect_type(compiled, "bool", where)
        if NEW not in compiled.names_used():
            raise SpecMeaningError(f"corrupt.where never reads `{NEW}` (the candidate for slot "
                                   f"'{self.resample}'), so it cannot choose between candidates",
                                   self._at("where"), hint=f"e.g. {NEW}.gender != {self.resample}.gender")
        return compiled

    def _set_expressions(self, given: Dict[str, str], changed: set) -> Dict[str, Tuple[Any, str]]:
        out = {}
        for slot, text in given.items():
            if slot not in self.slots:
                raise SpecMeaningError(unknown("slot", slot, self.slots, "in corrupt.set"),
                                       self.spec.source.key(("prompts", "corrupt", "set", slot)))
            if slot in changed:
                raise SpecMeaningError(f"slot '{slot}' is changed twice: by corrupt.set and by "
                                       f"corrupt.{'swap' if slot == self.swap else 'resample'}",
                                       self.spec.source.key(("prompts", "corrupt", "set", slot)),
                                       hint="change each slot one way")
            path = ("prompts", "corrupt", "set", slot)
            where = lambda off, p=path: self.spec.source.inside(p, off)  # noqa: E731
            compiled = compile_expression(text, self.types.scope("corrupt.set", tokens=True), where)
            expect_type(compiled, ("str", self.types.types[slot]), where, f"the value of slot '{slot}'")
            out[slot] = (compiled, path)
        return out

    # ------------------------------------------------------------------ per prompt

    def apply(self, values: Dict[str, str]) -> Tuple[Dict[str, str], Template]:
        corrupted = dict(values)
        if self.swap is not None:
            corrupted[self.swap] = self._as_item(self.swap, self.opposite(self.swap, values[self.swap]), None)
        if self.resample is not None:
            corrupted[self.resample] = self._draw(values)
        if self.set:
            self.env.values = values
            for slot, (compiled, path) in self.set.items():
                corrupted[slot] = self._as_item(slot, compiled.evaluate(self.env), path)
        return corrupted, self.template

    def _draw(self, values: Dict[str, str]) -> str:
        slot = self.resample
        # scanning the pool for every prompt is quadratic in the vocabulary: metered (dataset/budget.py)
        charge(len(self.pools[slot]) // 20 + (20 * len(self.pools[slot]) if self.where is not None else 0))
        choices = [w for w in self.pools[slot] if w != values[slot]]
        if self.where is not None:
            choices = [w for w in choices if self._allowed(values, w)]
            if not choices:
                shown = ", ".join(f"{s} = {str.__str__(v)!r}" for s, v in values.items())
                raise SpecMeaningError(f"no item of slot '{slot}''s vocabulary satisfies corrupt.where for the "
                                       f"prompt with {shown}", self._at("where"),
                                       hint="loosen the condition, or filter the vocabularies so every "
                                            "prompt has a partner")
        return self.rng.choice(choices)

    def _allowed(self, values: Dict[str, str], candidate: str) -> bool:
        self.env.values = {**values, NEW: candidate}
        return bool(self.where.evaluate(self.env))

    def _as_item(self, slot: str, value: str, path) -> str:
        """A record slot's new value is the item of its vocabulary with that text."""
        if isinstance(value, Record) or not self.types.types[slot].startswith("rec:"):
            return value
        charge(len(self.pools[slot]) // 20)
        for item in self.pools[slot]:
            if item == value:
                return item
        where = self.spec.loc(*path) if path else self._at("swap")
        raise SpecMeaningError(f"slot '{slot}' is set to {str(value)!r}, which is not an item of its vocabulary "
                               "(after its filter), so its fields are unknown", where,
                               hint="a record slot takes an item of its own vocabulary")


def _check_one_picker(spec, corrupt: Dict[str, Any]) -> None:
    if "swap" in corrupt and "resample" in corrupt:
        raise SpecMeaningError("corrupt takes at most one of 'swap' and 'resample'; found both 'swap' and "
                               "'resample'", spec.source.key(("prompts", "corrupt", "resample")),
                               hint="keep 'swap' or 'resample', and change other slots with `set:`")
