"""`mi-run plan SPEC --metrics`: the candidates' clean and corrupted metrics, without analyses.

A keep-condition's thresholds are guesses until the metrics are seen; a run that keeps
nothing cost a model load and wrote nothing. Here the model loads, every candidate pair's
metrics (the spec's metric and every metric a keep-condition reads) are measured in one
batched sweep, and each keep-condition is evaluated on all of them alone, so the user sees
the distributions and how many pairs each condition would keep before running anything.
"""
from __future__ import annotations

from typing import Any, Dict, List


def candidate_metrics(prepared, progress: bool = False) -> Dict[str, Any]:
    """{"rows": one per candidate (texts, answer/foil text, each metric), "metrics": quantiles per
    record.metric, "keep": [{"step", "condition", "kept", "of"}]}."""
    import torch

    from ..dataset.examples import pair_rows
    from ..expr import Env
    from .pipeline import pair_metrics
    from .run import Session

    session = Session.of(prepared, progress)
    session.open()
    pairs, plan = prepared.dataset.pairs, prepared.plan
    names = sorted(plan.metrics_needed)
    with torch.no_grad():
        measured = pair_metrics(session.executor, session.unembed, pairs, names, "candidates")
    rows = pair_rows(pairs, prepared.tokenizer)
    columns: Dict[str, List[float]] = {}
    for record, metrics in measured.items():
        for name, values in metrics.items():
            columns[f"{record}.{name}"] = [float(v) for v in values]
            for row, value in zip(rows, values):
                row[f"{record}_{name}"] = float(value)
    keep = []
    env = Env()
    for index, step in enumerate(plan.pipeline):
        if step.kind != "keep":
            continue
        kept = 0
        for i in range(len(pairs)):
            env.values = {r: {n: float(v[i]) for n, v in m.items()} for r, m in measured.items()}
            kept += bool(step.params.condition.evaluate(env))
        keep.append({"step": index + 1, "condition": prepared.spec.pipeline[index]["keep"], "kept": kept,
                     "of": len(pairs)})
    return {"rows": rows, "metrics": {k: quantiles(v) for k, v in columns.items()}, "columns": columns,
            "keep": keep}


def quantiles(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]  # noqa: E731
    return {"min": ordered[0], "p10": at(0.1), "p25": at(0.25), "median": at(0.5), "p75": at(0.75),
            "p90": at(0.9), "max": ordered[-1]}


def histogram(values: List[float], bins: int = 10, width: int = 40) -> List[str]:
    """A text histogram: one line per bin, its range, count and a bar."""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / span * bins))] += 1
    most = max(counts)
    return [f"    [{low + span * i / bins:9.3f}, {low + span * (i + 1) / bins:9.3f}) {c:5d} "
            + "#" * round(width * c / most) for i, c in enumerate(counts)]
