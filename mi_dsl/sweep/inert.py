"""Axes that change nothing: warned before a sweep runs.

The tutorial sweep's `seed` axis read "stability across seeds: 1.0" because nothing in the
tutorial is random: every seed ran the same computation. Here each point's *content* (what
its numbers can depend on: the compiled pipeline and analyses with the seeds they actually
use, the metric, the model, the prompt pairs) is digested once at validation; an axis whose
values give the same content for every setting of the other axes is inert, and the sweep
says so, located at the axis in the sweep file, in its output and on its report.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from ..errors import SpecWarning
from ..runtime.store import digest


def content_key(prepared) -> str:
    """What a point's numbers can depend on; the spec's own `seed:` counts only where a step reads it
    (a sample step's or head detection's seed, a resampled corruption's draws in the dataset)."""
    plan, spec, dataset = prepared.plan, prepared.spec, prepared.dataset
    steps = [(s.kind, json.dumps(s.params.to_json(), sort_keys=True, default=str))
             for s in plan.pipeline + plan.analyses]
    pairs: object  # the pairs' token ids, or the spec's text that makes them
    if dataset is not None:
        pairs = [(p.clean.ids, p.corrupted.ids, p.answers, p.foils) for p in dataset.pairs]
    else:  # no tokenizer offline: the spec's prompt-making parts stand for the pairs, the seed with them
        pairs = json.dumps({k: spec.data.get(k) for k in ("vocabularies", "prompts", "dataset", "seed")},
                           sort_keys=True, default=str)
    return digest("sweep-content", steps, plan.metric, plan.model.identity(), pairs)


def inert_axes(sweep, contents: Dict[str, str]) -> List[SpecWarning]:
    """One warning per axis whose values change no point's content."""
    warnings = []
    for index, axis in enumerate(sweep.axes):
        if len(set(axis.labels)) < 2:
            continue
        groups: Dict[Any, set] = {}
        for point in sweep.points:
            others = tuple(v for i, v in enumerate(point.labels.values()) if i != index)
            groups.setdefault(others, set()).add(contents[point.id])
        if all(len(keys) == 1 for keys in groups.values()):
            why = (" (nothing in the spec reads the seed: no sample without a seed of its own, no resampled "
                   "corruption, no random analysis), so a comparison across seeds, such as the stability of "
                   "top heads, measures nothing" if axis.name == "seed" else "")
            warnings.append(SpecWarning(
                f"axis '{axis.name}' changes nothing: its values {', '.join(axis.labels)} give every point the "
                f"same prompts, plan and model{why}", sweep.doc.source.key(("axes", axis.name))))
    return warnings
