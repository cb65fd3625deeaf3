"""Plan-time checks of positions against the tokenized prompts (no torch).

Patching copies activations from one prompt into another position by position. When a
clean prompt and its corrupted partner differ in length (a longer name, a corrupted
template with another word), the same index names different tokens in the two, so an
index-for-index copy would silently patch the wrong token. Here, before any model
loads, every position selector of every pairwise analysis is resolved in both prompts
of every candidate pair:

- prompts all of one length are patched index for index, positions named in the clean
  prompts (TransformerLens's convention);
- prompts of several lengths (within a set, or a clean prompt and its partner) are
  resolved per prompt and aligned by name: the source prompt's `final` is patched into
  the base prompt's `final`, `name` into `name`, wherever each sits (batches are padded
  on the right, runtime/executor.py);
- what cannot be aligned (every position, an index, a slot one prompt lacks or holds in
  another token count, attention patterns whose key axes differ) is refused with a
  located error.

The whole candidate set is checked, before the pipeline keeps or samples, so a spec
that passes here cannot fail on alignment later. Which check an analysis needs is part of
its registration (`alignment=`: position_map for patching, check_ablation, one_length_only
for edge circuits); this module names no analysis kind.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from ..errors import SpecMeaningError

def check_alignment(spec, plan, dataset) -> None:
    """Each analysis's own alignment check (its registration's `alignment`) on every candidate pair."""
    from ..core.registry import REGISTRY

    if dataset is None or not dataset.pairs:
        return
    for index, step in enumerate(plan.analyses):
        align = REGISTRY[step.kind].alignment
        if align is not None:
            align(spec, index, step.params, dataset.pairs)


def one_length_only(spec, index: int, params, pairs) -> None:
    """An analysis that compares clean and corrupted prompts position by position, with no names."""
    if not one_length(pairs):
        lengths = sorted({len(p.clean.ids) for p in pairs} | {len(p.corrupted.ids) for p in pairs})
        raise SpecMeaningError(
            f"{params.kind} compares clean and corrupted prompts position by position, but the prompts have "
            f"{_tokens(lengths)}", spec.loc("analyses", index, "kind"),
            hint="set prompts.equal_lengths: true to keep the most common length, or filter the vocabularies")


def _lengths(prompts) -> Counter:
    return Counter(len(p.ids) for p in prompts)


def _one_length(spec, index: int, pairs, which: str, why: str) -> int:
    lengths = _lengths(getattr(p, which) for p in pairs)
    if len(lengths) > 1:
        shown = ", ".join(f"{n} tokens ({c} prompts)" for n, c in sorted(lengths.items()))
        example = next(getattr(p, which).text for p in pairs
                       if len(getattr(p, which).ids) != lengths.most_common(1)[0][0])
        raise SpecMeaningError(
            f"{spec.analyses[index]['kind']} {why}, but the {which} prompts have different token lengths: "
            f"{shown}; e.g. '{example}'", spec.loc("analyses", index, "kind"),
            hint="filter the vocabularies on token counts (e.g. ntokens(\" \" + item) == 1) or set "
                 "prompts.equal_lengths: true to find the odd ones")
    return next(iter(lengths))


def one_length(pairs) -> bool:
    """Every clean and corrupted prompt has the same token length (index-for-index patching)."""
    return len({len(p.clean.ids) for p in pairs} | {len(p.corrupted.ids) for p in pairs}) == 1


def position_map(spec, index: int, params, pairs) -> Optional[Dict[str, Any]]:
    """None when every prompt has one length: positions are named in the clean prompts and
    patched index for index (TransformerLens's convention; a corrupted template may move a
    slot, e.g. IOI's s#2 holds the io name in the corrupted prompt).

    Otherwise (prompts of several lengths, within a set or between a clean prompt and its
    partner) positions are resolved per pair and aligned by name: {"clean": [per selector,
    per pair, its positions in the clean prompt], "corrupted": [... in the corrupted one]};
    a selector names as many tokens in both prompts of a pair, matched in order. Refuses what
    cannot be aligned."""
    if one_length(pairs):
        return None
    kind = params.kind
    clean = sorted({len(p.clean.ids) for p in pairs})
    corrupted = sorted({len(p.corrupted.ids) for p in pairs})
    lengths = (f"clean prompts have {_tokens(clean)} and corrupted ones {_tokens(corrupted)}")
    if params.positions is None:
        raise SpecMeaningError(
            f"{kind} patches every position by default, but {lengths}, so position i is not the same "
            f"token in every prompt (e.g. '{pairs[0].clean.text}' / '{pairs[0].corrupted.text}')",
            spec.loc("analyses", index, "kind"),
            hint="name the positions to patch, e.g. positions: [final, name]; named positions are "
                 "matched by name in each prompt")
    if params.target.startswith("pattern"):
        raise SpecMeaningError(
            f"attention patterns of prompts of different lengths ({lengths}) have key axes of different "
            "sizes, so a pattern row cannot be copied from one to the other",
            spec.loc("analyses", index, "target"),
            hint="patch z, q, k or v instead, or make the prompts the same length")
    return _resolve_selectors(spec, index, params, pairs)


def _tokens(lengths) -> str:
    return (f"{lengths[0]} tokens" if len(lengths) == 1
            else ", ".join(map(str, lengths[:-1])) + f" or {lengths[-1]} tokens")


def _resolve_selectors(spec, index: int, params, pairs) -> Dict[str, Any]:
    from ..errors import ExpressionError
    from ..expr import Env

    items = [selector.text for selector in params.positions]
    out: Dict[str, List[List[Tuple[int, ...]]]] = {"clean": [], "corrupted": []}
    for selector in params.positions:  # compiled by the compiler
        item, path, compiled = selector.text, selector.path, selector.compiled
        if str(item).strip().lstrip("-").isdigit():
            raise SpecMeaningError(
                f"position {item} is an index, not a name; the prompts differ in length, so an index does "
                "not name the same token in every prompt", spec.source.value(path),
                hint="name the position: final, a slot (e.g. name) or a token of one (name[-1])")
        per_pair: Dict[str, List[Tuple[int, ...]]] = {"clean": [], "corrupted": []}
        for pair in pairs:
            got = {}
            for which in ("clean", "corrupted"):
                prompt = getattr(pair, which)
                try:
                    got[which] = tuple(compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans)))
                except ExpressionError as err:
                    raise SpecMeaningError(f"position '{item}' cannot be found in the {which} prompt "
                                           f"'{prompt.text}': {err.message}", err.location,
                                           hint="name positions both prompts have") from None
                per_pair[which].append(got[which])
            if len(got["clean"]) != len(got["corrupted"]):
                raise SpecMeaningError(
                    f"position '{item}' names {len(got['clean'])} token(s) in the clean prompt "
                    f"'{pair.clean.text}' and {len(got['corrupted'])} in its corrupted partner "
                    f"'{pair.corrupted.text}', so they cannot be patched token for token",
                    spec.source.value(path),
                    hint=f"select one token of the slot, e.g. {_one_token_of(item)} (its last token), or filter "
                         "the vocabulary on token counts")
        out["clean"].append(per_pair["clean"])
        out["corrupted"].append(per_pair["corrupted"])
    for n in range(len(pairs)):
        _check_one_to_one(spec, index, items, [sel[n] for sel in out["clean"]], [sel[n] for sel in out["corrupted"]])
    return out


def _check_one_to_one(spec, index: int, items, clean, corrupted) -> None:
    """Two selectors may not send one clean position to two corrupted ones (or back)."""
    forward: Dict[int, int] = {}
    backward: Dict[int, int] = {}
    for item, a_positions, b_positions in zip(items, clean, corrupted):
        for a, b in zip(a_positions, b_positions):
            if forward.setdefault(a, b) != b or backward.setdefault(b, a) != a:
                raise SpecMeaningError(
                    f"position '{item}' maps clean position {a} to corrupted position {b}, but another "
                    "selector maps them differently; the alignment by name must be one to one",
                    spec.loc("analyses", index, "positions"))


def check_ablation(spec, index: int, params, pairs) -> None:
    """Mean and resample ablation take each head's value from other prompts at the same position: the
    same index for prompts of one length, the same-named position (every prompt has it, in as many
    tokens) for prompts of several lengths."""
    method = params.method
    if method == "zero" or one_length(pairs):
        return
    sides = ("clean",) if method == "mean" else ("clean", "corrupted")
    why = ("averages each position over the clean prompts" if method == "mean" else
           "takes each head's value from the corrupted partner at the same position")
    lengths = sorted({len(getattr(p, side).ids) for p in pairs for side in sides})
    if params.positions is None or str(params.positions.selectors[0].text).strip().lstrip("-").isdigit():
        raise SpecMeaningError(
            f"{method} ablation {why}, but the prompts have {_tokens(lengths)}, so "
            f"{'every position' if params.positions is None else 'an index'} is not the same token in each",
            spec.loc("analyses", index, "positions" if params.positions is not None else "method"),
            hint="name the positions (final, a slot, slot[-1]): each prompt's same-named position is used")
    from ..errors import ExpressionError
    from ..expr import Env

    selector = params.positions.selectors[0]
    counts = {}
    for pair in pairs:
        for side in sides:
            prompt = getattr(pair, side)
            try:
                counts[(id(pair), side)] = len(set(selector.compiled.evaluate(
                    Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans))))
            except ExpressionError as err:
                raise SpecMeaningError(f"position '{selector.text}' cannot be found in the {side} prompt "
                                       f"'{prompt.text}': {err.message}", err.location) from None
    within = {c for c in counts.values()} if method == "mean" else None
    odd = [p for p in pairs if method == "resample" and counts[(id(p), "clean")] != counts[(id(p), "corrupted")]]
    if (within and len(within) > 1) or odd:
        example = odd[0].clean.text if odd else pairs[0].clean.text
        raise SpecMeaningError(
            f"position '{selector.text}' names different numbers of tokens in the prompts {method} ablation "
            f"matches (e.g. '{example}'), so they cannot be matched token for token",
            spec.source.value(selector.path), hint=f"select one token, e.g. {_one_token_of(selector.text)}")


def _one_token_of(item) -> str:
    """An example selector of one token of the position the user wrote (`country` -> `country[-1]`)."""
    text = str(item)
    return f"{text}[-1]" if text.isidentifier() else "name[-1]"
