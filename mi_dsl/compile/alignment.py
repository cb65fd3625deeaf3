"""Plan-time checks of positions against the tokenized prompts (no torch).

Patching copies activations from one prompt into another position by position. When a
clean prompt and its corrupted partner differ in length (a longer name, a corrupted
template with another word), the same index names different tokens in the two, so an
index-for-index copy would silently patch the wrong token. Here, before any model
loads, every position selector of every pairwise analysis is resolved in both prompts
of every candidate pair:

- prompts of one length are patched index for index, positions named in the clean
  prompts (TransformerLens's convention);
- prompts of different lengths are aligned by name: the source prompt's `final` is
  patched into the destination's `final`, `name` into `name`, wherever each sits;
- what cannot be aligned (every position of prompts of different lengths, a slot the
  corrupted prompt lacks, a slot of a different token count, attention patterns whose
  key axes differ) is refused with a located error.

The whole candidate set is checked, before the pipeline keeps or samples, so a spec
that passes here cannot fail on alignment later.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import SpecMeaningError

PAIRWISE_PATCHING = ("activation_patching", "attribution_patching")


def check_alignment(spec, plan, dataset) -> None:
    if dataset is None or not dataset.pairs:
        return
    for index, step in enumerate(plan.analyses):
        params = dict(step.params)
        if step.kind in PAIRWISE_PATCHING:
            position_map(spec, index, params, dataset.pairs)
        elif step.kind == "ablation":
            _check_ablation(spec, index, params, dataset.pairs)


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


def position_map(spec, index: int, params: Dict[str, Any], pairs) -> Optional[Dict[str, Any]]:
    """For a patching analysis whose clean and corrupted prompts differ in length: {"clean":
    [per selector, its positions in the clean prompts], "corrupted": [... in the corrupted
    prompts]}, the same for every pair; each selector names as many tokens in both, matched in
    order. None when the lengths are equal: then positions are named in the clean prompts and
    patched index for index (TransformerLens's convention; a corrupted template may move a
    slot, e.g. IOI's s#2 holds the io name in the corrupted prompt). Refuses what cannot be
    aligned."""
    kind = spec.analyses[index]["kind"]
    clean_len = _one_length(spec, index, pairs, "clean", "runs the prompts of each set in one batch")
    corrupted_len = _one_length(spec, index, pairs, "corrupted", "runs the prompts of each set in one batch")
    target = params.get("target", "z")
    if clean_len == corrupted_len:
        return None  # index for index, positions named in the clean prompts (TransformerLens's convention)
    if "positions" not in params:
        raise SpecMeaningError(
            f"{kind} patches every position by default, but clean prompts have {clean_len} tokens and "
            f"corrupted ones {corrupted_len}, so position i is not the same token in both "
            f"(e.g. '{pairs[0].clean.text}' / '{pairs[0].corrupted.text}')",
            spec.loc("analyses", index, "kind"),
            hint="name the positions to patch, e.g. positions: [final, name]; named positions are "
                 "matched by name across the two prompts")
    if target.startswith("pattern"):
        raise SpecMeaningError(
            f"attention patterns of prompts of different lengths ({clean_len} and {corrupted_len} tokens) "
            "have key axes of different sizes, so a pattern row cannot be copied from one to the other",
            spec.loc("analyses", index, "target"),
            hint="patch z, q, k or v instead, or make the prompts the same length")
    return _resolve_selectors(spec, index, params, pairs)


def _resolve_selectors(spec, index: int, params, pairs) -> Dict[str, Any]:
    from ..dataset.build import slot_vocabularies
    from ..expr import Env, parse_positions
    from ..errors import ExpressionError

    value = params["positions"]
    items: Sequence = list(value) if isinstance(value, (list, tuple)) else [value]
    slots = list(slot_vocabularies(spec, spec.prompts["template"]))
    out: Dict[str, List[Tuple[int, ...]]] = {"clean": [], "corrupted": []}
    for i, item in enumerate(items):
        path = ("analyses", index, "positions") + ((i,) if isinstance(value, (list, tuple)) else ())
        where = lambda off, p=path: spec.source.inside(p, off)  # noqa: E731
        compiled = parse_positions(str(item), slots, where=where)
        if str(item).strip().lstrip("-").isdigit():
            raise SpecMeaningError(
                f"position {item} is an index, not a name; clean and corrupted prompts differ in length, "
                "so an index does not name the same token in both", spec.source.value(path),
                hint="name the position: final, a slot (e.g. name) or a token of one (name[-1])")
        found: Dict[str, Tuple[int, ...]] = {}
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
            if len(got["clean"]) != len(got["corrupted"]):
                raise SpecMeaningError(
                    f"position '{item}' names {len(got['clean'])} token(s) in the clean prompt "
                    f"'{pair.clean.text}' and {len(got['corrupted'])} in its corrupted partner "
                    f"'{pair.corrupted.text}', so they cannot be patched token for token",
                    spec.source.value(path),
                    hint="select one token of the slot, e.g. name[-1], or filter the vocabulary on token counts")
            for which in ("clean", "corrupted"):
                if found.setdefault(which, got[which]) != got[which]:
                    prompt = getattr(pair, which)
                    raise SpecMeaningError(
                        f"position '{item}' names positions {list(found[which])} in one {which} prompt and "
                        f"{list(got[which])} in another ('{prompt.text}'); patching needs the same positions "
                        "in every prompt of a batch", spec.source.value(path),
                        hint="filter the vocabularies so each slot has one token count")
        out["clean"].append(found["clean"])
        out["corrupted"].append(found["corrupted"])
    _check_one_to_one(spec, index, items, out)
    return out


def _check_one_to_one(spec, index: int, items, resolved) -> None:
    """Two selectors may not send one clean position to two corrupted ones (or back)."""
    forward: Dict[int, int] = {}
    backward: Dict[int, int] = {}
    for item, clean, corrupted in zip(items, resolved["clean"], resolved["corrupted"]):
        for a, b in zip(clean, corrupted):
            if forward.setdefault(a, b) != b or backward.setdefault(b, a) != a:
                raise SpecMeaningError(
                    f"position '{item}' maps clean position {a} to corrupted position {b}, but another "
                    "selector maps them differently; the alignment by name must be one to one",
                    spec.loc("analyses", index, "positions"))


def _check_ablation(spec, index: int, params, pairs) -> None:
    method = params.get("method", "zero")
    if method == "mean":
        _one_length(spec, index, pairs, "clean", "with method: mean averages each position over the prompts")
    elif method == "resample":
        odd = [p for p in pairs if len(p.clean.ids) != len(p.corrupted.ids)]
        if odd:
            raise SpecMeaningError(
                f"resample ablation takes each head's value from the corrupted prompt at the same position, "
                f"but {len(odd)} corrupted prompt(s) differ in length from their clean prompt, e.g. "
                f"'{odd[0].clean.text}' ({len(odd[0].clean.ids)} tokens) / '{odd[0].corrupted.text}' "
                f"({len(odd[0].corrupted.ids)} tokens)", spec.loc("analyses", index, "method"),
                hint="use method: zero or mean, or make the corrupted prompts as long as the clean ones")
