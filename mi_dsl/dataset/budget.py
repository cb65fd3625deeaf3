"""Building the dataset within bounds a spec cannot lift (mi_dsl/limits.py).

The product of the slots' vocabularies is checked against `prompts` before any prompt is
built; each prompt against `prompt_tokens`; and the whole build is metered against
`dataset_work`: each tokenizer call charges 20 units plus one per character (MeteredTokenizer),
each placeholder filled 20, each resampled candidate scanned a share. So validate stays linear
in the spec's size and ends in seconds whatever the spec says.
"""
from __future__ import annotations

import bisect
from typing import List

from ..limits import charge, current, hint, limit_of
from ..errors import SpecMeaningError


def check_size(spec, order: List[str], pools: List[List[str]]) -> None:
    """The product of the slots' pools against `prompts` (limits.py), before any prompt is built; the
    spec's max_prompts may lower that bound, never raise it."""
    asked = spec.prompts.get("max_prompts")
    bound = current().prompts
    if asked is not None and asked > bound:
        raise SpecMeaningError(f"prompts.max_prompts = {asked:,} is above the bound of {bound:,} prompts, which "
                               "a spec cannot raise", spec.loc("prompts", "max_prompts"), hint=hint("prompts"))
    limit = limit_of("prompts", asked)
    total = 1
    for pool in pools:
        total *= len(pool)
    if total > limit:
        sizes = " x ".join(f"{len(p)} {s}" for s, p in zip(order, pools))
        where = spec.loc("prompts", "max_prompts" if asked is not None else "template")
        named = f"prompts.max_prompts = {limit:,}" if asked is not None else f"the bound of {limit:,} prompts"
        raise SpecMeaningError(f"the template would make {total:,} prompts ({sizes}), more than "
                               f"{named}", where, hint="filter the vocabularies; " + hint("prompts"))


def token_spans(offsets, char_spans):
    """(slot, first token, one past the last token) of each placeholder: the tokens whose character
    offsets overlap its characters. Offsets run in order, so each is two binary searches, not a scan of
    every token (a scan per placeholder made 400-placeholder prompts quadratic); offsets out of order
    (no tokenizer seen so far) fall back to the scan, with the same answer."""
    starts, ends = [a for a, _ in offsets], [b for _, b in offsets]
    ordered = all(x <= y for x, y in zip(starts, starts[1:])) and all(x <= y for x, y in zip(ends, ends[1:]))
    for slot, _occurrence, start, end in char_spans:
        if ordered:
            first, last = bisect.bisect_right(ends, start), bisect.bisect_left(starts, end)
        else:
            covered = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
            first, last = (covered[0], covered[-1] + 1) if covered else (0, 0)
        yield slot, first, last


def too_long(spec, text: str, size: str, corrupted: bool) -> None:
    key = ("prompts", "corrupt", "template") if corrupted else ("prompts", "template")
    raise SpecMeaningError(f"a prompt of {size} ('{text[:60]}...') is longer than the bound of "
                           f"{current().prompt_tokens:,} tokens per prompt", spec.loc(*key),
                           hint=hint("prompt_tokens"))


class MeteredTokenizer:
    """The dataset's tokenizer, charging each call to the work meter (charge) before it runs:
    20 per call plus 1 per character. Everything else is the tokenizer's own."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def encode(self, text: str):
        charge(20 + len(text))
        return self._tokenizer.encode(text)

    def encode_with_offsets(self, text: str):
        charge(20 + len(text))
        return self._tokenizer.encode_with_offsets(text)

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)
