"""What `mi-run plan` shows: the compiled dataset and plan as one JSON-able mapping (no torch)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

from .cost import plan_costs
from .memory import estimate, widest_forward


def plan_summary(prepared, examples: int = 3) -> Dict[str, Any]:
    """The prepared spec's dataset and plan (`prepare(...)` with its tokenizer)."""
    spec, plan, dataset, tokenizer = prepared.spec, prepared.plan, prepared.dataset, prepared.tokenizer
    return {
        "spec": spec.file,
        "name": spec.name,
        "spec_hash": plan.spec_hash,
        "model": {"source": spec.model.source, "name": spec.model.name, "path": spec.model.path,
                  "prepend_bos": spec.model.prepend_bos},
        "tokenizer": tokenizer.origin,
        "vocab": {name: {"before": r.before, "after": r.after, "kept": r.kept, "dropped": r.dropped,
                         "duplicates": r.duplicates} for name, r in dataset.vocab.items()},
        "dataset": {
            "candidates": len(dataset.pairs),
            "token_lengths": dataset.token_lengths,
            "slots": dataset.slots,
            "slot_positions": _slot_positions(dataset),
            "answer_pairs": _answer_pairs(dataset, tokenizer),
            "examples": [_example(p, tokenizer) for p in dataset.pairs[:examples]],
            "pair_views": _pair_views(prepared, examples),
        },
        **plan_steps(plan, len(dataset.pairs)),
        "memory": estimate(spec, plan, tokenizer.vocab_size, widest_forward(dataset.pairs)),
        "cost": plan_costs(prepared),
        "training": _training_estimates(prepared),
        "warnings": [w.format() for w in dataset.warnings],
    }


def _training_estimates(prepared) -> Dict[str, Any]:
    """Analysis id -> the estimate of an analysis that trains (its class's `estimate(params, prepared)`)."""
    from ..core.registry import REGISTRY, load_all

    load_all()
    out = {}
    for step in prepared.plan.analyses:
        impl = REGISTRY[step.kind].implementation()
        found = impl.estimate(step.params, prepared) if hasattr(impl, "estimate") else None
        if found:
            out[step.id] = found
    return out


def plan_steps(plan, candidates: int) -> Dict[str, Any]:
    """The plan's steps as data: what `mi-run plan` prints and the run log records."""
    return {
        "pipeline": _pipeline_counts(plan, candidates),
        "metric": plan.metric,
        "metrics_needed": list(plan.metrics_needed),
        "analyses": [{"id": s.id, "kind": s.kind, "description": s.description, "hooks": list(s.hooks),
                      "positions": s.positions, "depends_on": list(s.depends_on), "params": s.params.to_json()}
                     for s in plan.analyses],
        "passes": [{"id": p.id, "prompts": p.prompts, "max_pairs": p.max_pairs, "analyses": list(p.analyses),
                    "hooks": list(p.hooks), "patterns": p.patterns, "keys_values": p.keys_values} for p in plan.passes],
        "batch_size": plan.batch_size,
    }


def _pair_views(prepared, count: int) -> List[Dict[str, Any]]:
    """The first pairs as the model sees them: both prompts' tokens, each named span's positions in
    both (token indices, BOS included), and for patching across lengths the positions each selector
    aligns (clean position -> corrupted position), as the runtime will patch them."""
    from ..core.registry import REGISTRY
    from .alignment import position_map

    spec, plan, dataset, tokenizer = prepared.spec, prepared.plan, prepared.dataset, prepared.tokenizer
    pairs = dataset.pairs[:count]
    maps = {}
    for index, step in enumerate(plan.analyses):
        if REGISTRY[step.kind].alignment is position_map and pairs:  # aligns positions by name
            mapped = position_map(spec, index, step.params, pairs)
            if mapped:
                maps[step.id] = ([sel.text for sel in step.params.positions], mapped)
    views = []
    for i, pair in enumerate(pairs):
        names = list(dict.fromkeys(list(pair.clean.spans) + list(pair.corrupted.spans)))
        views.append({
            "clean_tokens": tokenizer.token_strs(pair.clean.ids),
            "corrupted_tokens": tokenizer.token_strs(pair.corrupted.ids),
            "spans": {name: {side: positions(getattr(pair, side).spans.get(name, ()))
                             for side in ("clean", "corrupted")}
                      for name in names},
            "aligned": {step_id: [{"position": str(sel), "clean": list(m["clean"][k][i]),
                                   "corrupted": list(m["corrupted"][k][i])} for k, sel in enumerate(selectors)]
                        for step_id, (selectors, m) in maps.items()},
        })
    return views


def positions(spans) -> List[List[int]]:
    """Half-open token spans [(4, 6)] as the token indices they hold [[4, 5]]: one notation, the report's."""
    return [list(range(a, b)) for a, b in spans]


def _slot_positions(dataset) -> Dict[str, Any]:
    out = {}
    for slot in dataset.slots:
        spans = Counter(p.clean.spans.get(slot) for p in dataset.pairs)
        out[slot] = positions(next(iter(spans))) if len(spans) == 1 else "varies by prompt"
    return out


def _answer_pairs(dataset, tokenizer) -> List[Dict[str, Any]]:
    """Each (answer, foil) pair with its prompt count and the clean slot values its prompts share."""
    groups: Dict[Any, List[Dict[str, str]]] = {}
    for pair in dataset.pairs:
        groups.setdefault((pair.answers, pair.foils), []).append(dict(pair.values))
    return [{"answer": _ids(a), "answer_token": _strs(tokenizer, a), "foil": _ids(f), "foil_token": _strs(tokenizer, f),
             "prompts": len(values),
             "values": {slot: word for slot, word in values[0].items() if all(v[slot] == word for v in values)}}
            for (a, f), values in groups.items()]


def _ids(tokens):
    """One token as its id (as before token sets existed); a set as a list of ids."""
    return tokens[0] if len(tokens) == 1 else list(tokens)


def _strs(tokenizer, tokens):
    return tokenizer.token_str(tokens[0]) if len(tokens) == 1 else [tokenizer.token_str(t) for t in tokens]


def _example(pair, tokenizer) -> Dict[str, Any]:
    return {"clean": pair.clean.text, "corrupted": pair.corrupted.text,
            "answer": [_ids(pair.answers), _strs(tokenizer, pair.answers)],
            "foil": [_ids(pair.foils), _strs(tokenizer, pair.foils)],
            "clean_tokens": tokenizer.token_strs(pair.clean.ids), "values": dict(pair.values),
            "continuation": pair.continuation}


def _pipeline_counts(plan, candidates: int) -> List[Dict[str, Any]]:
    """Prompt counts after each step: exact until a keep-condition, then upper bounds."""
    rows, count, exact = [], candidates, True
    for step in plan.pipeline:
        if step.kind == "keep":
            exact = False
        elif step.kind == "sample":
            count = min(count, step.params.n)
        elif step.kind == "symmetric" and step.params.enabled:
            count = 2 * count
        rows.append({"step": step.kind, "description": step.description,
                     "prompts_after": count if exact else f"<= {count} (the model decides)"})
    return rows
