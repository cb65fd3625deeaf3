"""The interchange analysis's computation: examples -> sites -> featurizers -> interchanges -> scores."""
from __future__ import annotations

import time
from typing import Any, Dict, List

import torch

from ...errors import RunError
from ..base import Result
from .engine import Inputs, prepare
from .evaluate import Job, evaluate, unintervened
from .featurizers import pca, random_subspace
from .score import Targets, score
from .settings import Settings
from .sites import columns, sites
from .summary import summarise


def compute(params, run) -> Result:
    from ...causal import Builder, compile_source, load_causal_model

    started = time.perf_counter()
    settings = Settings.of(params, run.spec.seed)
    model, reader = load_causal_model(run.spec)
    rule = compile_source(run.spec, settings.source, model, reader, ("analyses", run.analysis_index, "source"),
                          run.spec.seed)
    made = Builder(model, reader, run.tokenizer).examples(run.pairs, rule)
    examples = [e for e in made if len(e.candidates) > 1]
    counts = {"pairs": len(run.pairs), "made": len(made), "kept": len(examples),
              "no_source": len(run.pairs) - len(made), "one_candidate": len(made) - len(examples)}
    if len(examples) < 2:
        raise RunError(f"interchange needs counterfactual examples: {len(made)} were made from {len(run.pairs)} pairs "
                       f"and {counts['one_candidate']} of them have one candidate only (base, source and every "
                       "label the same output), leaving {len(examples)}", run.where("source"),
                       hint="draw sources that change the variables (source: {where: ...}), or use more pairs")
    cols = columns(settings, examples, run)
    site_list = sites(settings, params, run, len(cols))
    targets = Targets.of(examples, model.names)
    inputs = prepare(run, examples, cols, site_list)
    vocabulary = settings.iia_over == "vocabulary"
    every = torch.arange(len(examples))
    base_logits, base_tops = unintervened(run, inputs, every, targets.candidates, vocabulary)
    baseline = {v: score(base_logits, base_tops, targets, every, v) for v in model.names}
    extra: Dict[str, Any] = {"counts": counts, "source": rule.describe(), "unintervened": baseline}
    if not settings.featurized:
        jobs = [Job(site) for site in site_list]
        records = _scored(run, inputs, jobs, every, "all", targets, model.names, settings)
    else:
        records, featurized = _featurized(run, inputs, site_list, cols, targets, model.names, settings, examples)
        extra.update(featurized)
    extra["seconds"] = round(time.perf_counter() - started, 3)
    data, rows, summary = summarise(settings, site_list, cols, records, model.names, extra, run)
    convention = data.pop("convention")
    best = data.get("best") or {}
    key_numbers = {f"{v}_best_iia": (best.get(v) or {}).get("iia") for v in settings.variables
                   if isinstance(best.get(v), dict)}
    return Result(data, tables={"sites": rows}, summary=summary, convention=convention, key_numbers=key_numbers)


def _scored(run, inputs: Inputs, jobs: List[Job], examples: torch.Tensor, split: str, targets: Targets,
            variables, settings: Settings) -> List[Dict[str, Any]]:
    """One record per job and label variable: the job's interchange scored against that variable's labels."""
    logits, tops = evaluate(run, inputs, jobs, examples, targets.candidates, settings.iia_over == "vocabulary",
                            settings.batch_size)
    out = []
    for j, job in enumerate(jobs):
        for variable in variables:
            numbers = score(logits[j], None if tops is None else tops[j], targets, examples, variable)
            out.append({"site": job.site, "featurizer_for": job.trained_for, "split": split, "variable": variable,
                        **numbers})
    return out


def _featurized(run, inputs: Inputs, site_list, cols, targets: Targets, variables, settings: Settings, examples):
    from ...causal import split
    from .saved import load

    training = settings.training
    train, test = split(examples, training.split, training.split_slot, training.test_fraction, training.seed)
    if not train or not test:
        raise RunError(f"the split leaves {len(train)} training and {len(test)} test examples; a featurizer needs "
                       "both", run.where("training"), hint="use more pairs, or another test_fraction or split")
    train_t, test_t = torch.tensor(train), torch.tensor(test)
    val_t, fit_t = _validation(train_t, training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    loaded = load(settings.subspace, run.where("subspace")) if settings.subspace else None
    jobs: List[Job] = []
    curves: List[Dict[str, Any]] = []
    for site in site_list:
        d = int(inputs.source[site.hook].shape[-1])
        if loaded is not None:
            jobs.append(Job(site, _fits(loaded[0], d, site, run)))
        elif settings.featurizer == "random":
            jobs.append(Job(site, random_subspace(d, settings.dims, generator)))
        elif settings.featurizer == "pca":
            jobs.append(Job(site, pca(_site_activations(inputs, site, train_t), settings.dims)))
        else:
            jobs += _trained(run, inputs, site, targets, settings, fit_t, val_t, d, curves, cols)
    records = _scored(run, inputs, jobs, test_t, "test", targets, variables, settings)
    if settings.featurizer == "das" and loaded is None:
        records += _scored(run, inputs, jobs, fit_t, "train", targets, variables, settings)
    extra = {"split": {"by": training.split, "slot": training.split_slot, "train": len(fit_t),
                       "validation": len(val_t), "test": len(test_t), "seed": training.seed},
             "training": curves, "jobs": jobs}
    if loaded is not None:
        extra["loaded_subspace"] = {"file": settings.subspace, "provenance": loaded[1]}
    return records, extra


def _trained(run, inputs, site, targets, settings, fit_t, val_t, d, curves, cols) -> List[Job]:
    from .train import train_das

    jobs = []
    for variable in settings.variables:
        W, curve = train_das(run, inputs, site, targets, variable, fit_t, val_t, d, settings.dims, settings.training,
                             settings.iia_over == "vocabulary")
        jobs.append(Job(site, W, variable))
        curves.append({"variable": variable, "site": site.label(cols), **curve.to_json()})
    return jobs


def _validation(train: torch.Tensor, seed: int):
    """(validation, fitting) examples: a seeded fifth of the training examples validates early stopping."""
    if len(train) < 5:
        return train[:0], train
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))]
    n = max(1, len(train) // 5)
    return order[:n].sort().values, order[n:].sort().values


def _site_activations(inputs: Inputs, site, examples: torch.Tensor) -> torch.Tensor:
    """[N, d] the source run's activations at the site's positions over `examples`."""
    _, ex, _, source_pos = inputs.columns[site.column].entries(examples)
    values = inputs.source[site.hook][ex, source_pos]
    return values[:, site.head] if site.head >= 0 else values


def _fits(W: torch.Tensor, d: int, site, run) -> torch.Tensor:
    if W.shape[0] != d:
        raise RunError(f"the saved subspace is {W.shape[0]}-dimensional, but site {site.component} at layer "
                       f"{site.layer} holds {d} dimensions", run.where("subspace"))
    return W
