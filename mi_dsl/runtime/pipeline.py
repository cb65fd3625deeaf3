"""The dataset pipeline on batched runs: keep-conditions, seeded sampling, symmetric pairing.

Steps run in the order the spec states, as the seed does them: keep the prompts whose
clean and corrupted metrics satisfy a condition, sample with Python's `random` (so
`seed: 42` picks the seed notebook's prompts), then pair symmetrically.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..errors import NoPromptsLeft, RunError
from ..expr import Env
from .executor import by_length, pad_right, token_sets
from ..metrics import Metric, checked, compute_metrics, reads_continuation
from .shared_prefix import SharedPrefix
from .unembed import final_inputs


def _as_set(tokens):
    return tuple(tokens) if isinstance(tokens, (tuple, list)) else (int(tokens),)


@dataclass
class PipelineOutcome:
    pairs: List[Any]                       # the final PromptPairs
    stages: List[Dict[str, Any]] = field(default_factory=list)
    candidate_metrics: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)  # from keep steps
    candidate_pairs: List[Any] = field(default_factory=list)  # the pairs the last keep step read
    candidate_kept: List[bool] = field(default_factory=list)  # and whether each passed


def prompt_metrics(executor, unembed, prompts: Sequence[Sequence[int]], answers: Sequence[int],
                   foils: Sequence[int], metrics: Sequence[Metric], what: str = "", interventions=(),
                   memo: Optional[Dict[tuple, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The plan's compiled `metrics` (by name) for prompts of any lengths: batches in order of length,
    right-padded (executor.pad_right), each prompt read at its own final position (continuation
    metrics: at its own final position and the continuation's positions after it). `memo` (prompt ids ->
    final residual), given by a caller that runs the same unmodified model twice over the same
    prompts (the dataset step: keep-condition, then the final pairs' metrics), serves prompts
    already run and keeps the new ones."""
    metrics = [checked(m) for m in metrics]
    if reads_continuation(metrics):
        return _continuation_prompt_metrics(executor, unembed, prompts, answers, foils, metrics, what,
                                            interventions)
    return _shared_forwards(executor, unembed, prompts, answers, foils, metrics, what, interventions,
                            None if interventions else memo)


def _shared_forwards(executor, unembed, prompts, answers, foils, metrics, what, interventions=(), memo=None):
    """As prompt_metrics, one forward per distinct prompt: a pair's corrupted prompt is often
    another pair's clean one (the syllogisms' swapped descriptor), and the metric of each row
    is read from its prompt's final residual with the row's own answer and foil."""
    rows_of: Dict[tuple, List[int]] = {}
    for i, ids in enumerate(prompts):
        rows_of.setdefault(tuple(ids), []).append(i)
    memo = {} if memo is None else memo
    unique = [ids for ids in rows_of if ids not in memo]  # to run; the others were run before
    order = by_length(unique)
    ans = token_sets([_as_set(a) for a in answers])
    foil = token_sets([_as_set(f) for f in foils])
    # prompts sharing their first tokens run them once (runtime/shared_prefix.py)
    shared = None if interventions or not unique else SharedPrefix.plan(executor, unique, what)

    def one_batch(s: slice):
        if shared is not None:
            x = shared.final_inputs(executor, order[s], unique)
        else:
            tokens, final = pad_right([unique[u] for u in order[s]])
            x = final_inputs(executor, tokens, interventions, None if bool((final == tokens.shape[1] - 1).all())
                             else final)
        if not interventions:
            memo.update((unique[u], x[j]) for j, u in enumerate(order[s]))
        return _rows_metrics(x, [unique[u] for u in order[s]])

    def _rows_metrics(x, batch):
        local = [j for j, ids in enumerate(batch) for _ in rows_of[ids]]
        rows = [r for ids in batch for r in rows_of[ids]]
        device = executor.device
        return rows, compute_metrics(x[local], ans[rows].to(device), foil[rows].to(device), metrics, unembed)

    names = [m.name for m in metrics]
    out = {n: torch.empty(len(prompts)) for n in names}
    parts = executor.map_batches(len(order), max(len(p) for p in unique), one_batch, what) if unique else []
    running = set(unique)
    known = [ids for ids in rows_of if ids not in running]
    for start in range(0, len(known), 256):  # a full-vocabulary metric holds [rows, vocab] logits at once
        chunk = known[start:start + 256]
        parts.append(_rows_metrics(torch.stack([memo[ids] for ids in chunk]), chunk))
    for rows, values in parts:
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


def pair_metrics(executor, unembed, pairs, metrics: Sequence[Metric], what: str = "",
                 memo=None) -> Dict[str, Dict[str, torch.Tensor]]:
    """Clean and corrupted values of the plan's compiled `metrics` (by name), in one batched sweep over both
    (`memo`: prompt_metrics)."""
    prompts = [p.clean.ids for p in pairs] + [p.corrupted.ids for p in pairs]
    answers = [p.answers for p in pairs] * 2
    foils = [p.foils for p in pairs] * 2
    both = prompt_metrics(executor, unembed, prompts, answers, foils, metrics, what, memo=memo)
    n = len(pairs)
    return {"clean": {k: v[:n] for k, v in both.items()}, "corrupted": {k: v[n:] for k, v in both.items()}}


def run_pipeline(plan, spec, dataset, executor, unembed, memo=None) -> PipelineOutcome:
    """The pipeline's steps in order (`memo`: prompt_metrics; the keep-condition's forwards fill it)."""
    outcome = PipelineOutcome(list(dataset.pairs))
    for index, step in enumerate(plan.pipeline):
        before = len(outcome.pairs)
        before_pairs = {_identity(p) for p in outcome.pairs} if step.kind == "symmetric" else None
        params = step.params
        if step.kind == "keep":
            outcome.pairs = _keep(spec, index, params, outcome, executor, unembed, plan, memo)
        elif step.kind == "sample":
            outcome.pairs = _sample(outcome.pairs, params.n, params.seed, executor,
                                    spec.loc("pipeline", index, "sample", "n"))
        elif step.kind == "symmetric" and params.enabled:
            outcome.pairs = symmetric(outcome.pairs)
        outcome.stages.append({"step": step.kind, "description": step.description, "before": before,
                               "after": len(outcome.pairs)})
        if not outcome.pairs:
            raise NoPromptsLeft(f"no prompts are left after pipeline step {index + 1} ({step.description})",
                                spec.loc("pipeline", index), "loosen the keep-condition: `mi-run plan --metrics "
                                "SPEC` prints the candidates' clean and corrupted metrics", outcome)
        unchanged = _unchanged(step, params, before, outcome.pairs, before_pairs)
        if unchanged:  # kept with the stage, so a run that reuses the stored step says it too
            outcome.stages[-1]["unchanged"] = unchanged
    return outcome


def warn_unchanged(spec, stages, executor) -> None:
    """A located warning for each pipeline step that changed nothing (`unchanged` in its stage)."""
    for index, stage in enumerate(stages):
        if stage.get("unchanged"):
            executor.warn(f"pipeline step {index + 1} ({stage['step']}) changed nothing: {stage['unchanged']}",
                          spec.loc("pipeline", index))


def _unchanged(step, params, before: int, pairs, before_pairs) -> str:
    """Why a keep or symmetric step left the pairs as they were ('' when it changed them); a sample
    larger than the set warns on its own."""
    if step.kind == "keep" and len(pairs) == before:
        return f"every one of the {before} pairs satisfies the condition"
    if step.kind == "symmetric" and params.enabled and {_identity(p) for p in pairs} == before_pairs:
        return (f"it added no pair (it only reordered the {before}): each pair's swap (its corrupted prompt as "
                "the clean one, answer and foil swapped) is already a pair of the set, as a corruption that swaps "
                "within the vocabulary makes it")
    return ""


def _identity(pair):
    return pair.clean.ids, pair.corrupted.ids, pair.answers, pair.foils


def _keep(spec, index, params, outcome, executor, unembed, plan, memo=None):
    condition = params.condition  # compiled once, by the compiler
    metrics = pair_metrics(executor, unembed, outcome.pairs, [plan.metric_named(n) for n in params.metrics],
                           "keep-condition", memo)
    for record in ("clean", "corrupted"):
        for name, values in metrics[record].items():
            if torch.isnan(values).any():
                raise RunError(f"the {record} {name} is NaN for {int(torch.isnan(values).sum())} prompts",
                               spec.loc("pipeline", index, "keep"),
                               hint="check model.dtype (float16 overflows easily) and the model's weights")
    outcome.candidate_metrics = {r: {k: v.tolist() for k, v in m.items()} for r, m in metrics.items()}
    env = Env()
    kept = []
    for i, pair in enumerate(outcome.pairs):
        env.values = {r: {k: float(v[i]) for k, v in metrics[r].items()} for r in metrics}
        keep = bool(condition.evaluate(env))
        if keep:
            kept.append(pair)
    outcome.candidate_pairs = list(outcome.pairs)
    chosen = {id(p) for p in kept}
    outcome.candidate_kept = [id(p) in chosen for p in outcome.pairs]
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
