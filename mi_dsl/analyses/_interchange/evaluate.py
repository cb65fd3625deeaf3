"""Evaluating many interchanges at once: jobs (a site, optionally through a fixed featurizer) stacked
in the batch dimension, layer by layer, as exact activation patching stacks its cells."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from ...runtime.executor import at_final
from ...runtime.unembed import UNEMBED_INPUT
from .._patching.engines import _batch_size
from .engine import Inputs, Segment, candidate_logits, forward, top_tokens
from .sites import Site


@dataclass(frozen=True)
class Job:
    site: Site
    W: Optional[torch.Tensor] = None     # [d, k] orthonormal columns; None: the full vector
    trained_for: Optional[str] = None    # the variable a DAS featurizer was trained for


def evaluate(run, inputs: Inputs, jobs: Sequence[Job], examples: torch.Tensor, candidates: torch.Tensor,
             vocabulary: bool, batch_size: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """([jobs, m, K] candidate logits, [jobs, m] top tokens or None) of every job on `examples` ([m])."""
    m = len(examples)
    logits = torch.empty(len(jobs), m, candidates.shape[1])
    tops = torch.empty(len(jobs), m, dtype=torch.long) if vocabulary else None
    for layer in sorted({j.site.layer for j in jobs}):
        chosen = [i for i, j in enumerate(jobs) if j.site.layer == layer]

        def one_batch(rows: slice, chosen=chosen, layer=layer):
            segments = _segments(jobs, chosen, examples, rows)
            x = forward(run, inputs, layer, segments)
            cand = candidates[torch.cat([s.examples for s in segments])]
            out = candidate_logits(run, x, cand).cpu()
            return out, (top_tokens(run, x).cpu() if vocabulary else None)

        with _batch_size(run.executor, batch_size):
            parts = run.executor.map_batches(len(chosen) * m, inputs.width(), one_batch,
                                             f"interchanging {len(chosen)} sites at layer {layer}")
        index = torch.tensor(chosen)
        logits[index] = torch.cat([p[0] for p in parts]).view(len(chosen), m, -1)
        if vocabulary:
            tops[index] = torch.cat([p[1] for p in parts]).view(len(chosen), m)
    return logits, tops


def _segments(jobs, chosen: List[int], examples: torch.Tensor, rows: slice) -> List[Segment]:
    """The rows rows.start..rows.stop-1 of a layer's stack (row r: job chosen[r // m], example r % m)."""
    m, out, r = len(examples), [], rows.start
    while r < rows.stop:
        job, first = chosen[r // m], r % m
        last = min(m, first + rows.stop - r)
        out.append(Segment(jobs[job].site, examples[first:last], r - rows.start, jobs[job].W))
        r += last - first
    return out


def unintervened(run, inputs: Inputs, examples: torch.Tensor, candidates: torch.Tensor, vocabulary: bool):
    """([m, K] candidate logits, [m] top tokens or None) of the base prompts as they are (from the shared
    sweep's unembedding inputs when `prepare` ran one: engine.py)."""

    def one_batch(rows: slice):
        chosen = examples[rows]
        if inputs.base_final is not None:
            x = inputs.base_final[chosen.to(inputs.base_final.device)]
        else:
            _, kept = run.executor.capture(inputs.base[chosen], {UNEMBED_INPUT: at_final(inputs.final[chosen])},
                                           stop_after=UNEMBED_INPUT)
            x = kept[UNEMBED_INPUT]
        return candidate_logits(run, x, candidates[chosen]).cpu(), (top_tokens(run, x).cpu() if vocabulary else None)

    parts = run.executor.map_batches(len(examples), inputs.width(), one_batch, "base prompts")
    return torch.cat([p[0] for p in parts]), (torch.cat([p[1] for p in parts]) if vocabulary else None)
