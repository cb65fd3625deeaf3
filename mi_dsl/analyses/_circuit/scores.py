"""Edge scores, one [n_forward, n_backward] tensor per method.

Every method estimates the same quantity: the change in the mean metric when the edge
u -> v alone carries u's "off" output (the corrupted run's, by default) instead of its
clean output. So score < 0 means the edge supports the clean behaviour when the clean
metric is the larger one.

  eap                  (off_u - clean_u) . d metric / d input_v, gradient at the clean run
  eap_ig_inputs        the gradient averaged over `steps` runs whose input embeddings are
                       off + a (clean - off), a at the midpoints (k + 1/2) / steps
  eap_ig_activations   the gradient averaged over `steps` runs in which every node input
                       is pinned to off_in + a (clean_in - off_in) (gradients pass through)
  exact                one circuit-ablated forward per edge (all other edges clean)

Products are summed over positions and averaged over prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...errors import RunError
from .engine import GraphModel, Pass, batches

METHODS = ("eap", "eap_ig_inputs", "eap_ig_activations", "exact")
ABLATIONS = ("patching", "mean", "zero")


@dataclass
class Scores:
    scores: torch.Tensor      # [F, Bw], 0 where there is no edge
    method: str
    steps: int
    forwards: int
    backwards: int


def off_outputs(model: GraphModel, corrupted: torch.Tensor, ablation: str, mean: Optional[torch.Tensor],
                rows: torch.Tensor) -> torch.Tensor:
    """[B, S, F, d]: what ablated edges carry for these prompts."""
    if ablation == "patching":
        with torch.no_grad():
            return model.run(corrupted, Pass(rows)).outputs
    B, S = corrupted.shape
    if ablation == "mean":
        return mean[None].expand(B, -1, -1, -1).clone()
    return torch.zeros(B, S, model.graph.n_forward, model.d_model, dtype=model.W_O.dtype, device=model.W_O.device)


def mean_outputs(model: GraphModel, corrupted: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[S, F, d]: each node's output averaged over the corrupted prompts, per position."""
    total = None
    for part in batches(len(corrupted), batch_size):
        rows = torch.arange(part.start, part.stop)
        with torch.no_grad():
            out = model.run(corrupted[part], Pass(rows)).outputs.sum(0)
        total = out if total is None else total + out
    return total / len(corrupted)


def score_edges(model: GraphModel, clean: torch.Tensor, corrupted: torch.Tensor, method: str = "eap", *,
                steps: int = 8, batch_size: int = 8, ablation: str = "patching",
                max_exact_edges: int = 5000) -> Scores:
    """Edge scores over all prompt pairs (clean, corrupted: [N, S] token ids, one length)."""
    if clean.shape != corrupted.shape:
        raise RunError(f"clean and corrupted prompts differ in shape ({tuple(clean.shape)} vs "
                       f"{tuple(corrupted.shape)}); edge scores need pairs of one token length")
    if method not in METHODS or ablation not in ABLATIONS:
        raise RunError(f"unknown circuit method {method!r} or ablation {ablation!r}")
    g = model.graph
    mask = g.edge_mask()
    if method == "exact" and g.n_edges > max_exact_edges:
        raise RunError(f"exact scoring patches each of the {g.n_edges} edges on its own; this graph has more "
                       f"than max_exact_edges = {max_exact_edges}", hint="use eap or eap_ig_inputs, or raise "
                       "max_exact_edges for a small model")
    start_f, start_b = model.forwards, model.backwards
    scores = torch.zeros(g.n_forward, g.n_backward, dtype=torch.float64, device=model.W_O.device)
    with model.split_inputs():
        mean = mean_outputs(model, corrupted, batch_size) if ablation == "mean" else None
        for part in batches(len(clean), batch_size):
            rows = torch.arange(part.start, part.stop)
            off = off_outputs(model, corrupted[part], ablation, mean, rows)
            step = _METHOD_STEP[method]
            step(model, clean[part], off, rows, scores, steps=steps, mask=mask)
    scores = (scores / len(clean)).cpu() * mask  # masks and circuits live on the CPU
    return Scores(scores.float(), method, steps if method.startswith("eap_ig") else 1,
                  model.forwards - start_f, model.backwards - start_b)


def _accumulator(model: GraphModel, scores: torch.Tensor, holder: dict, weight: float):
    """on_grad for the backward: scores[f, n] += weight * sum over (b, s, d) of diff[b, s, f, d] *
    grad[b, s, n, d], in float64. The diff is laid out once per batch as [F, B*S*d] (a copy per
    input node of the whole [B, S, F, d] difference, permuted and widened, was half of EAP's time)."""
    def on_grad(start: int, stop: int, grad: torch.Tensor) -> None:
        n_up = int(model.n_upstream[start])
        flat = holder.get("flat")
        if flat is None:
            diff = holder["diff"]
            flat = holder["flat"] = diff.permute(2, 0, 1, 3).reshape(diff.shape[2], -1).double()
        by_row = grad.permute(0, 1, 3, 2).reshape(-1, grad.shape[2]).double()  # [B*S*d, n]
        scores[:n_up, start:stop] += weight * (flat[:n_up] @ by_row.to(flat.device))
    return on_grad


def _backward(model: GraphModel, job: Pass) -> None:
    model.backwards += 1
    with torch.enable_grad():  # the runner computes under no_grad; the sum must join the graph
        job.metric.sum().backward()


def _eap(model, clean, off, rows, scores, **_):
    holder: dict = {}
    job = model.run(clean, Pass(rows, on_grad=_accumulator(model, scores, holder, 1.0)), grad=True)
    holder["diff"] = off - job.outputs
    _backward(model, job)


def _ig_inputs(model, clean, off, rows, scores, steps, **_):
    with torch.no_grad():
        clean_out = model.run(clean, Pass(rows)).outputs
    holder = {"diff": off - clean_out}
    on_grad = _accumulator(model, scores, holder, 1.0 / steps)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        embed = off[:, :, 0] + alpha * (clean_out[:, :, 0] - off[:, :, 0])
        job = model.run(clean, Pass(rows, capture_outputs=False, embed=embed, on_grad=on_grad), grad=True)
        _backward(model, job)


def _ig_activations(model, clean, off, rows, scores, steps, mask, **_):
    with torch.no_grad():
        clean_job = model.run(clean, Pass(rows, capture_inputs=True))
        off_job = model.run(clean, Pass(rows, capture_inputs=True, off=off, complement=mask.to(device=off.device, dtype=off.dtype)))
    holder = {"diff": off - clean_job.outputs}
    on_grad = _accumulator(model, scores, holder, 1.0 / steps)
    clean_in, off_in = clean_job.inputs, off_job.inputs
    for k in range(steps):
        alpha = (k + 0.5) / steps
        pinned = off_in + alpha * (clean_in - off_in)
        job = model.run(clean, Pass(rows, capture_outputs=False, pin_inputs=pinned, on_grad=on_grad), grad=True)
        _backward(model, job)


def _exact(model, clean, off, rows, scores, mask, chunk_rows: int = 256, **_):
    """m(all edges but e) - m(clean) for each edge e, several edges per forward (stacked rows)."""
    B = len(clean)
    with torch.no_grad():
        base = model.run(clean, Pass(rows, capture_outputs=False)).metric
        edges = mask.nonzero()
        per_chunk = max(1, chunk_rows // B)
        for first in range(0, len(edges), per_chunk):
            chunk = edges[first:first + per_chunk]
            C = len(chunk)
            complement = torch.zeros(C, *mask.shape, dtype=off.dtype, device=off.device)
            complement[torch.arange(C, device=off.device), chunk[:, 0].to(off.device), chunk[:, 1].to(off.device)] = 1.0
            job = Pass(rows.repeat(C), capture_outputs=False, off=off.repeat(C, 1, 1, 1),
                       complement=complement.repeat_interleave(B, dim=0))
            metric = model.run(clean.repeat(C, 1), job).metric.view(C, B)
            effect = (metric - base[None]).sum(1).double()
            scores[chunk[:, 0].to(scores.device), chunk[:, 1].to(scores.device)] += effect


_METHOD_STEP = {"eap": _eap, "eap_ig_inputs": _ig_inputs, "eap_ig_activations": _ig_activations, "exact": _exact}
