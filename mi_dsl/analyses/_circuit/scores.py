"""Edge scores, one [n_forward, n_backward] tensor per method.

Every method estimates the same quantity: the change in the mean metric when the edge
u -> v alone carries u's "off" output (the corrupted run's, by default) instead of its
clean output, as (off_u - clean_u) . g_v summed over positions and averaged over prompts,
with g_v a gradient of the metric at v's input. So score < 0 means the edge supports the
clean behaviour when the clean metric is the larger one. The methods differ in g_v; the
published ones are those of EAP-IG (hannamw/EAP-IG, src/eap/attribute.py), under its names:

  eap                  g at the clean run                                 (EAP)
  eap_ig_inputs        g averaged over m runs whose input embeddings are    (EAP-IG-inputs)
                       off + a (clean - off), a = k/m for k = 0 .. m-1
  eap_ig_activations   for each of the 2L + 1 layer outputs in turn (the    (EAP-IG-activations)
                       embeddings, each layer's attention output, each MLP),
                       g averaged over m clean runs in which that output alone
                       is replaced by off + a (clean - off), a = k/m for k = 1 .. m,
                       the gradient cut there (the replacement is a constant);
                       the average runs over all (2L + 1) m runs
  clean_corrupted      the mean of g at the clean run and g at the          (clean-corrupted)
                       corrupted run (patching only)
  eap_ig_pinned_inputs mi-dsl's own: g averaged over m runs in which every node input is
                       pinned to off_in + a (clean_in - off_in) at once, a = (k + 1/2)/m,
                       gradients passing through the pins (not a published estimator)
  exact                one circuit-ablated forward per edge (all other edges clean): the
                       metric's change itself                             (exact)

`ig_points: midpoint` puts the two EAP-IG methods' a at (k + 1/2)/m instead.
A neuron score (`neurons=True`) keeps the output dimension: [n_forward, d_model], the sum
over the node's outgoing edges per dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ...errors import RunError
from .engine import GraphModel, Pass, over_batches

METHODS = ("eap", "eap_ig_inputs", "eap_ig_activations", "clean_corrupted", "eap_ig_pinned_inputs", "exact")
ABLATIONS = ("patching", "mean", "zero")
IG_POINTS = ("published", "midpoint")
PATCHING_ONLY = ("clean_corrupted",)


@dataclass
class Scores:
    scores: torch.Tensor      # [F, Bw], 0 where there is no edge
    method: str
    steps: int
    forwards: int             # the passes it read, its corrupted capture included even when reused
    backwards: int
    neurons: Optional[torch.Tensor] = None  # [F, d] when asked for
    captures_reused: int = 0  # of `forwards`: captures an earlier pass of the analysis had taken


def alphas(method: str, steps: int, points: str = "published") -> List[float]:
    """Where the EAP-IG methods evaluate the gradient on the path from off (0) to clean (1)."""
    if points == "midpoint" or method == "eap_ig_pinned_inputs":
        return [(k + 0.5) / steps for k in range(steps)]
    if method == "eap_ig_activations":
        return [k / steps for k in range(1, steps + 1)]
    return [k / steps for k in range(steps)]


def off_outputs(model: GraphModel, corrupted: torch.Tensor, ablation: str, mean: Optional[torch.Tensor],
                rows: torch.Tensor, whole: bool = False) -> torch.Tensor:
    """[B, S, F, d]: what ablated edges carry for these prompts. `whole`: they are every prompt of the
    analysis (one batch), so the corrupted run is captured once for all its passes (GraphModel.capture)."""
    if ablation == "patching":
        return model.capture(corrupted, rows, keep=whole).outputs
    B, S = corrupted.shape
    if ablation == "mean":
        return mean[None].expand(B, -1, -1, -1).clone()
    return torch.zeros(B, S, model.graph.n_forward, model.d_model, dtype=model.W_O.dtype, device=model.W_O.device)


def mean_outputs(model: GraphModel, corrupted: torch.Tensor, batch_size: int, z: bool = False):
    """[S, F, d]: each node's output averaged over the corrupted prompts, per position (and, with
    z=True, each layer's attention z averaged the same way)."""
    def batch_sums(part: slice):
        with torch.no_grad():
            job = model.run(corrupted[part], Pass(torch.arange(part.start, part.stop), capture_z=z))
        return job.outputs.sum(0), {layer: value.sum(0) for layer, value in job.z.items()}

    total, total_z = None, None
    for out, sums in over_batches(model, len(corrupted), batch_size, batch_sums, "averaging node outputs"):
        total = out if total is None else total + out
        if z:
            total_z = sums if total_z is None else {k: total_z[k] + v for k, v in sums.items()}
    mean = total / len(corrupted)
    return (mean, {k: v / len(corrupted) for k, v in total_z.items()}) if z else mean


@dataclass
class Job:
    """What one batch's scoring step gets."""
    model: GraphModel
    clean: torch.Tensor
    corrupted: torch.Tensor
    off: torch.Tensor
    rows: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor
    steps: int
    points: str
    ablation: str
    neurons: Optional[torch.Tensor]
    mean_z: Optional[dict]


def score_edges(model: GraphModel, clean: torch.Tensor, corrupted: torch.Tensor, method: str = "eap", *,
                steps: int = 8, batch_size: int = 8, ablation: str = "patching", max_exact_edges: int = 5000,
                ig_points: str = "published", neurons: bool = False) -> Scores:
    """Edge scores over all prompt pairs (clean, corrupted: [N, S] token ids, one length)."""
    if clean.shape != corrupted.shape:
        raise RunError(f"clean and corrupted prompts differ in shape ({tuple(clean.shape)} vs "
                       f"{tuple(corrupted.shape)}); edge scores need pairs of one token length")
    if method not in METHODS or ablation not in ABLATIONS or ig_points not in IG_POINTS:
        raise RunError(f"unknown circuit method {method!r}, ablation {ablation!r} or ig_points {ig_points!r}")
    if method in PATCHING_ONLY and ablation != "patching":
        raise RunError(f"{method} reads gradients at the corrupted run, so it needs ablation: patching")
    g = model.graph
    mask = g.edge_mask()
    if method == "exact" and g.n_edges > max_exact_edges:
        raise RunError(f"exact scoring patches each of the {g.n_edges} edges on its own; this graph has more "
                       f"than max_exact_edges = {max_exact_edges}", hint="use eap or eap_ig_inputs, or raise "
                       "max_exact_edges for a small model")
    if method == "exact" and neurons:
        raise RunError("exact scores are per edge; neuron scores need a gradient method")
    start_f, start_b, start_r = model.forwards, model.backwards, model.captures_reused
    dev = model.W_O.device
    scores = torch.zeros(g.n_forward, g.n_backward, dtype=torch.float64, device=dev)
    neuron_scores = torch.zeros(g.n_forward, model.d_model, dtype=torch.float64, device=dev) if neurons else None
    with model.split_inputs():
        mean, mean_z = None, None
        if ablation == "mean":
            mean, mean_z = mean_outputs(model, corrupted, batch_size, z=True) if method == "eap_ig_activations" \
                else (mean_outputs(model, corrupted, batch_size), None)
        def batch_scores(part: slice):
            """This batch's sums (fresh tensors: a batch split after running out of memory adds nothing)."""
            rows = torch.arange(part.start, part.stop)
            off = off_outputs(model, corrupted[part], ablation, mean, rows, whole=part == slice(0, len(clean)))
            here, neurons_here = torch.zeros_like(scores), None if neuron_scores is None else torch.zeros_like(
                neuron_scores)
            _METHOD_STEP[method](Job(model, clean[part], corrupted[part], off, rows, here, mask, steps,
                                     ig_points, ablation, neurons_here, mean_z))
            return here, neurons_here

        what = f"scoring edges ({method})"
        for here, neurons_here in over_batches(model, len(clean), batch_size, batch_scores, what):
            scores += here
            if neuron_scores is not None:
                neuron_scores += neurons_here
    scores = (scores / len(clean)).cpu() * mask  # masks and circuits live on the CPU
    if neuron_scores is not None:
        neuron_scores = (neuron_scores / len(clean)).cpu().float()
    reused = model.captures_reused - start_r
    return Scores(scores.float(), method, steps if method.startswith("eap_ig") else 1,
                  model.forwards - start_f + reused, model.backwards - start_b, neuron_scores, reused)


def _accumulator(job: Job, holder: dict, weight: float):
    """on_grad for the backward: scores[f, n] += weight * sum over (b, s, d) of diff[b, s, f, d] *
    grad[b, s, n, d], in float64. The diff is laid out once per batch as [F, B*S*d] (a copy per
    input node of the whole [B, S, F, d] difference, permuted and widened, was half of EAP's time).
    Neuron scores keep d: neurons[f, d] += weight * sum over (b, s, n) of diff[b, s, f, d] * grad[b, s, n, d]."""
    model, scores = job.model, job.scores

    def on_grad(start: int, stop: int, grad: torch.Tensor) -> None:
        n_up = int(model.n_upstream[start])
        flat = holder.get("flat")
        if flat is None:
            diff = holder["diff"]
            flat = holder["flat"] = diff.permute(2, 0, 1, 3).reshape(diff.shape[2], -1).double()
        by_row = grad.permute(0, 1, 3, 2).reshape(-1, grad.shape[2]).double()  # [B*S*d, n]
        scores[:n_up, start:stop] += weight * (flat[:n_up] @ by_row.to(flat.device))
        if job.neurons is not None:
            summed = grad.sum(2).double().to(flat.device)                          # [B, S, d]
            diff = holder["diff"][:, :, :n_up].double()
            job.neurons[:n_up] += weight * torch.einsum("bsfd,bsd->fd", diff, summed)
    return on_grad


def _backward(model: GraphModel, job: Pass) -> None:
    model.backwards += 1
    with torch.enable_grad():  # the runner computes under no_grad; the sum must join the graph
        job.metric.sum().backward()


def _eap(job: Job):
    holder: dict = {}
    run = job.model.run(job.clean, Pass(job.rows, on_grad=_accumulator(job, holder, 1.0)), grad=True)
    holder["diff"] = job.off - run.outputs
    _backward(job.model, run)


def _clean_corrupted(job: Job):
    """EAP-IG's clean-corrupted: the gradient at the clean run and at the corrupted run, averaged."""
    with torch.no_grad():
        clean_out = job.model.run(job.clean, Pass(job.rows)).outputs
    on_grad = _accumulator(job, {"diff": job.off - clean_out}, 0.5)
    for tokens in (job.clean, job.corrupted):
        run = job.model.run(tokens, Pass(job.rows, capture_outputs=False, on_grad=on_grad), grad=True)
        _backward(job.model, run)


def _ig_inputs(job: Job):
    model, off = job.model, job.off
    with torch.no_grad():
        clean_out = model.run(job.clean, Pass(job.rows)).outputs
    on_grad = _accumulator(job, {"diff": off - clean_out}, 1.0 / job.steps)
    for alpha in alphas("eap_ig_inputs", job.steps, job.points):
        embed = off[:, :, 0] + alpha * (clean_out[:, :, 0] - off[:, :, 0])
        run = model.run(job.clean, Pass(job.rows, capture_outputs=False, embed=embed, on_grad=on_grad), grad=True)
        _backward(model, run)


def _ig_activations(job: Job):
    """One layer output at a time (the embeddings, a layer's attention output through its z, an
    MLP's output) replaced by its interpolation, a constant, in an otherwise clean run."""
    model, g = job.model, job.model.graph
    with torch.no_grad():
        clean_run = model.run(job.clean, Pass(job.rows, capture_z=True))
        off_z = _off_z(job)
    diff = job.off - clean_run.outputs
    groups = ["blocks.0.hook_resid_pre"]
    for layer in range(g.n_layers):
        groups += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"]
    points = alphas("eap_ig_activations", job.steps, job.points)
    on_grad = _accumulator(job, {"diff": diff}, 1.0 / (len(groups) * len(points)))
    for name in groups:
        clean_value, off_value = _endpoints(name, clean_run, job.off, off_z, g)
        for alpha in points:
            value = off_value + alpha * (clean_value - off_value)
            run = model.run(job.clean, Pass(job.rows, capture_outputs=False, replace={name: value}, on_grad=on_grad),
                            grad=True)
            _backward(model, run)


def _off_z(job: Job) -> dict:
    """Each layer's attention z that ablated edges stand for: the corrupted run's, the mean's, or 0."""
    if job.ablation == "patching":
        return job.model.run(job.corrupted, Pass(job.rows, capture_outputs=False, capture_z=True)).z
    if job.ablation == "mean":
        return {layer: z[None].expand(len(job.rows), *z.shape) for layer, z in job.mean_z.items()}
    return None  # zero


def _endpoints(name: str, clean_run: Pass, off: torch.Tensor, off_z: Optional[dict], g):
    """(clean value, off value) of one layer output at its hook."""
    if name.endswith("hook_z"):
        layer = int(name.split(".")[1])
        clean_z = clean_run.z[layer]
        return clean_z, (torch.zeros_like(clean_z) if off_z is None else off_z[layer])
    index = 0 if name.endswith("resid_pre") else g.mlp_index(int(name.split(".")[1]))
    return clean_run.outputs[:, :, index], off[:, :, index]


def _ig_pinned_inputs(job: Job):
    model, off = job.model, job.off
    with torch.no_grad():
        clean_run = model.run(job.clean, Pass(job.rows, capture_inputs=True))
        off_run = model.run(job.clean, Pass(job.rows, capture_inputs=True, off=off,
                                            complement=job.mask.to(device=off.device, dtype=off.dtype)))
    on_grad = _accumulator(job, {"diff": off - clean_run.outputs}, 1.0 / job.steps)
    clean_in, off_in = clean_run.inputs, off_run.inputs
    for alpha in alphas("eap_ig_pinned_inputs", job.steps):
        pinned = off_in + alpha * (clean_in - off_in)
        run = model.run(job.clean, Pass(job.rows, capture_outputs=False, pin_inputs=pinned, on_grad=on_grad), grad=True)
        _backward(model, run)


def _exact(job: Job, chunk_rows: int = 256):
    """m(all edges but e) - m(clean) for each edge e, several edges per forward (stacked rows)."""
    model, off, mask, rows, clean = job.model, job.off, job.mask, job.rows, job.clean
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
            run = Pass(rows.repeat(C), capture_outputs=False, off=off.repeat(C, 1, 1, 1),
                       complement=complement.repeat_interleave(B, dim=0))
            metric = model.run(clean.repeat(C, 1), run).metric.view(C, B)
            effect = (metric - base[None]).sum(1).double()
            job.scores[chunk[:, 0].to(job.scores.device), chunk[:, 1].to(job.scores.device)] += effect


_METHOD_STEP = {"eap": _eap, "eap_ig_inputs": _ig_inputs, "eap_ig_activations": _ig_activations,
                "clean_corrupted": _clean_corrupted, "eap_ig_pinned_inputs": _ig_pinned_inputs, "exact": _exact}
