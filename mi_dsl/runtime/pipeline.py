"""The dataset pipeline on batched runs: keep-conditions, seeded sampling, symmetric pairing.

Steps run in the order the spec states, as the seed does them: keep the prompts whose
clean and corrupted metrics satisfy a condition, sample with Python's `random` (so
`seed: 42` picks the seed notebook's prompts), then pair symmetrically.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

import torch

from ..errors import RunError
from ..expr import Env
from .executor import by_length, pad_right, token_sets
from ..metrics import Metric, checked, compute_metrics, reads_continuation
from .unembed import final_inputs


def _as_set(tokens):
    return tuple(tokens) if isinstance(tokens, (tuple, list)) else (int(tokens),)


@dataclass
class PipelineOutcome:
    pairs: List[Any]                       # the final PromptPairs
    stages: List[Dict[str, Any]] = field(default_factory=list)
    candidate_metrics: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)  # from keep steps
    # the last keep step's candidates, index for index with candidate_metrics: their prompts and
    # whether the condition kept them (the report lists the rejected ones with their metrics)
    keep_candidates: List[Dict[str, Any]] = field(default_factory=list)


def prompt_metrics(executor, unembed, prompts: Sequence[Sequence[int]], answers: Sequence[int],
                   foils: Sequence[int], metrics: Sequence[Metric], what: str = "",
                   interventions=()) -> Dict[str, torch.Tensor]:
    """The plan's compiled `metrics` (by name) for prompts of any lengths: batches in order of length,
    right-padded (executor.pad_right), each prompt read at its own final position (continuation
    metrics: at its own final position and the continuation's positions after it)."""
    metrics = [checked(m) for m in metrics]
    if reads_continuation(metrics):
        return _continuation_prompt_metrics(executor, unembed, prompts, answers, foils, metrics, what,
                                            interventions)
    return _shared_forwards(executor, unembed, prompts, answers, foils, metrics, what, interventions)


def _shared_forwards(executor, unembed, prompts, answers, foils, metrics, what, interventions=()):
    """As prompt_metrics, one forward per distinct prompt: a pair's corrupted prompt is often
    another pair's clean one (the syllogisms' swapped descriptor), and the metric of each row
    is read from its prompt's final residual with the row's own answer and foil."""
    rows_of: Dict[tuple, List[int]] = {}
    for i, ids in enumerate(prompts):
        rows_of.setdefault(tuple(ids), []).append(i)
    unique = list(rows_of)
    order = by_length(unique)
    ans = token_sets([_as_set(a) for a in answers])
    foil = token_sets([_as_set(f) for f in foils])

    def one_batch(s: slice):
        tokens, final = pad_right([unique[u] for u in order[s]])
        x = final_inputs(executor, tokens, interventions, None if bool((final == tokens.shape[1] - 1).all()) else final)
        local = [j for j, u in enumerate(order[s]) for _ in rows_of[unique[u]]]
        rows = [r for u in order[s] for r in rows_of[unique[u]]]
        device = executor.device
        return rows, compute_metrics(x[local], ans[rows].to(device), foil[rows].to(device), metrics, unembed)

    names = [m.name for m in metrics]
    out = {n: torch.empty(len(prompts)) for n in names}
    for rows, values in executor.map_batches(len(order), max(len(p) for p in unique), one_batch, what):
        for n in names:
            out[n][torch.tensor(rows)] = values[n].cpu()
    return out


def _continuation_prompt_metrics(executor, unembed, prompts, answers, foils, metrics, what, interventions):
    from ..compile.memory import longest_row
    from .continuation import continuation_metrics

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + max(len(answers[i]), len(foils[i])))

    def one_batch(s: slice):
        rows = order[s]
        return continuation_metrics(executor, unembed, [prompts[i] for i in rows], [answers[i] for i in rows],
                                    [foils[i] for i in rows], metrics, interventions)

    parts = executor.map_batches(len(order), longest_row(prompts, answers, foils), one_batch, what)
    names = [m.name for m in metrics]
    out = {n: torch.empty(len(prompts)) for n in names}
    index = torch.tensor(order)
    for n in names:
        out[n][index] = torch.cat([p[n].cpu() for p in parts])
    return out


def pair_metrics(executor, unembed, pairs, metrics: Sequence[Metric], what: str = "") -> Dict[str, Dict[str, torch.Tensor]]:
    """Clean and corrupted values of the plan's compiled `metrics` (by name), in one batched sweep over both."""
    prompts = [p.clean.ids for p in pairs] + [p.corrupted.ids for p in pairs]
    answers = [p.answers for p in pairs] * 2
    foils = [p.foils for p in pairs] * 2
    both = prompt_metrics(executor, unembed, prompts, answers, foils, metrics, what)
    n = len(pairs)
    return {"clean": {k: v[:n] for k, v in both.items()}, "corrupted": {k: v[n:] for k, v in both.items()}}


def run_pipeline(plan, spec, dataset, executor, unembed) -> PipelineOutcome:
    outcome = PipelineOutcome(list(dataset.pairs))
    for index, step in enumerate(plan.pipeline):
        before = len(outcome.pairs)
        params = step.params
        if step.kind == "keep":
            outcome.pairs = _keep(spec, index, params, outcome, executor, unembed, plan)
        elif step.kind == "sample":
            outcome.pairs = _sample(outcome.pairs, params.n, params.seed, executor,
                                    spec.loc("pipeline", index, "sample", "n"))
        elif step.kind == "symmetric" and params.enabled:
            outcome.pairs = symmetric(outcome.pairs)
        outcome.stages.append({"step": step.kind, "description": step.description, "before": before,
                               "after": len(outcome.pairs)})
        if not outcome.pairs:
            raise RunError(f"no prompts are left after pipeline step {index + 1} ({step.description})",
                           spec.loc("pipeline", index),
                           hint="loosen the keep-condition, or look at the candidates' metrics in the plan")
    return outcome


def _keep(spec, index, params, outcome, executor, unembed, plan):
    condition = params.condition  # compiled once, by the compiler
    metrics = pair_metrics(executor, unembed, outcome.pairs, [plan.metric_named(n) for n in params.metrics],
                           "keep-condition")
    for record in ("clean", "corrupted"):
        for name, values in metrics[record].items():
            if torch.isnan(values).any():
                raise RunError(f"the {record} {name} is NaN for {int(torch.isnan(values).sum())} prompts",
                               spec.loc("pipeline", index, "keep"),
                               hint="check model.dtype (float16 overflows easily) and the model's weights")
    outcome.candidate_metrics = {r: {k: v.tolist() for k, v in m.items()} for r, m in metrics.items()}
    env = Env()
    kept = []
    outcome.keep_candidates = []
    for i, pair in enumerate(outcome.pairs):
        env.values = {r: {k: float(v[i]) for k, v in metrics[r].items()} for r in metrics}
        keep = bool(condition.evaluate(env))
        outcome.keep_candidates.append({"clean": pair.clean.text, "corrupted": pair.corrupted.text, "kept": keep})
        if keep:
            kept.append(pair)
    return kept


def _sample(pairs, n: int, seed: int, executor, where=None):
    if n > len(pairs):
        executor.warn(f"sample asks for {n} prompts but only {len(pairs)} are left; keeping all", where)
        return list(pairs)
    indices = random.Random(seed).sample(range(len(pairs)), n)  # = random.seed(seed); random.sample
    return [pairs[i] for i in indices]


def symmetric(pairs):
    """The seed's pair_opposites: each pair, then its swap, skipping prompts already present."""
    seen, out = set(), []
    for pair in pairs:
        for candidate in (pair, pair.swapped()):
            if candidate.clean.text not in seen:
                seen.add(candidate.clean.text)
                out.append(candidate)
    return out
