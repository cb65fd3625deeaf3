"""What `mi-run plan` shows: the compiled dataset and plan as one JSON-able mapping (no torch)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

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
        },
        **plan_steps(plan, len(dataset.pairs)),
        "memory": estimate(spec, plan, tokenizer.vocab_size, widest_forward(dataset.pairs)),
        "training": _training_estimates(prepared),
        "warnings": [w.format() for w in dataset.warnings],
    }


def _training_estimates(prepared) -> Dict[str, Any]:
    """Analysis id -> the estimate of an analysis that trains (its class's `estimate(params, prepared)`)."""
    from ..analyses.registry import REGISTRY, load_all

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
                    "hooks": list(p.hooks)} for p in plan.passes],
        "batch_size": plan.batch_size,
    }


def _slot_positions(dataset) -> Dict[str, Any]:
    out = {}
    for slot in dataset.slots:
        spans = Counter(p.clean.spans.get(slot) for p in dataset.pairs)
        out[slot] = [list(s) for s in next(iter(spans))] if len(spans) == 1 else "varies by prompt"
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
        params = dict(step.params)
        if step.kind == "keep":
            exact = False
        elif step.kind == "sample":
            count = min(count, params["n"])
        elif step.kind == "symmetric" and params["enabled"]:
            count = 2 * count
        rows.append({"step": step.kind, "description": step.description,
                     "prompts_after": count if exact else f"<= {count} (the model decides)"})
    return rows
