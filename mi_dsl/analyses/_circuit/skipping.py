"""Layers a circuit-ablated forward need not compute: under patching ablation, a node none of whose
inputs keeps an edge computes the corrupted run's output.

A circuit-ablated forward adds, at each input v, sum over its parents u of c[u, v] * (off_u -
current_u). When every edge into v is ablated (c = 1 on all of them) that input is the residual
stream minus every parent's current output plus every parent's off output: the off run's input at v
(the constant biases are in both). Under patching ablation the off run is the corrupted run, so a
node whose inputs are all such computes exactly what the corrupted run computed there:

- an MLP whose input keeps no edge writes the corrupted run's MLP output;
- an attention layer none of whose query, key or value inputs keeps an edge writes the corrupted
  run's attention output, each head the corrupted run's head output. (Positions before the pass's
  `start` hold the clean run's keys and values, which are the corrupted run's there.)

So such a layer's computation is replaced, for the duration of the forward, by the corrupted
capture's values (engine.py `Capture`): the module that writes the residual stream's summand (the
one whose output is `hook_attn_out` / `hook_mlp_out`: the post-norm where the model has one, else
the attention or MLP itself) returns the captured value, and the attention or MLP before it passes
its input through without arithmetic. A small circuit at the start of a faithfulness curve keeps
edges into a few layers only; the rest run no matrix product. The numbers are the full
computation's up to float rounding (the captured value was computed from the corrupted run's own
residual stream rather than from this run's sum of parts): tests/analyses/test_circuit_skipping.py.

Only where each block has the known layout (a `hook_attn_out` written by `attn` or `ln1_post`, a
`hook_mlp_out` by `mlp` or `ln2_post`); any other model computes every layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch

from ...runtime.overrides import overriding

Value = Callable[[int], torch.Tensor]  # layer -> what the skipped layer's attention (or MLP) writes


@dataclass(frozen=True)
class Writers:
    """One block's attention and MLP modules and the modules whose outputs the residual stream adds."""
    attn: torch.nn.Module
    attn_out: torch.nn.Module      # attn, or the post-attention norm after it
    mlp: torch.nn.Module
    mlp_out: torch.nn.Module       # mlp, or the post-MLP norm after it


def writers_of(bridge) -> Optional[List[Writers]]:
    """Each block's Writers, or None when some block does not have the layout this module knows."""
    found = []
    for block in getattr(bridge, "blocks", None) or []:
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if attn is None or mlp is None:
            return None
        attn_out = _writer(block, "hook_attn_out", [attn, getattr(block, "ln1_post", None)])
        mlp_out = _writer(block, "hook_mlp_out", [mlp, getattr(block, "ln2_post", None)])
        if attn_out is None or mlp_out is None:
            return None
        found.append(Writers(attn, attn_out, mlp, mlp_out))
    return found or None


def _writer(block, alias: str, candidates) -> Optional[torch.nn.Module]:
    """The candidate module whose `hook_out` is the block's `alias` hook point."""
    try:
        point = getattr(block, alias)
    except AttributeError:
        return None
    return next((m for m in candidates if m is not None and getattr(m, "hook_out", None) is point), None)


def skippable(model, job, grad: bool) -> Tuple[List[int], List[int]]:
    """(attention layers, MLP layers) a pass of engine.GraphModel need not compute: a circuit-ablated forward
    under patching ablation (`job.off_attn`) with one complement, or stacked ones (`job._sparse`; the layers
    none of them needs), that keeps nothing but its metric, on a model whose blocks have the known layout."""
    plain = not (grad or job.capture_outputs or job.capture_inputs or job.capture_z or job.capture_attn_out
                 or job.embed is not None or job.pin_inputs is not None or job.replace or job.keys is not None
                 or job.on_grad is not None)
    if not (model.skip_layers and plain and model._writers and job.off_attn is not None and job._sparse is not None):
        return [], []
    return skipped_layers(model.graph, *(job.complements or [job.complement]))


def from_capture(model, job, attention: Sequence[int], mlps: Sequence[int]):
    """`skipping` for a pass of engine.GraphModel: a skipped layer records the off run's outputs of its
    nodes (so their ablated edges carry off - off = 0) and writes the off run's attention or MLP output."""
    g = model.graph

    def attn_value(layer: int) -> torch.Tensor:
        first = g.head_index(layer, 0)
        model._record(job, slice(first, first + g.n_heads), job.off[:, :, first:first + g.n_heads])
        return job.off_attn[:, :, layer]

    def mlp_value(layer: int) -> torch.Tensor:
        index = g.mlp_index(layer)
        model._record(job, slice(index, index + 1), job.off[:, :, index:index + 1])
        return job.off[:, :, index]
    return skipping(model._writers or [], attention, mlps, attn_value, mlp_value)


def skipped_layers(graph, *complements: torch.Tensor) -> Tuple[List[int], List[int]]:
    """(attention layers, MLP layers) none of whose inputs keeps an edge of any of the circuits whose
    ablated edges are `complements` [F, Bw] each (1 where an edge is ablated)."""
    mask = graph.edge_mask().to(complements[0].device)
    kept = torch.stack([(mask & c.eq(0)).any(0) for c in complements]).any(0).cpu()  # [Bw] inputs keeping an edge
    attention, mlps = [], []
    for layer in range(graph.n_layers):
        if not any(bool(kept[graph.input_slice(layer, letter)].any()) for letter in ("q", "k", "v")):
            attention.append(layer)
        if not bool(kept[graph.input_slice(layer, "m")].any()):
            mlps.append(layer)
    return attention, mlps


@contextmanager
def skipping(writers: Sequence[Writers], attention: Sequence[int], mlps: Sequence[int], attn_value: Value,
             mlp_value: Value) -> Iterator[List[str]]:
    """Within the block, the listed layers' attention (MLP) write `attn_value(layer)` (`mlp_value(layer)`)
    without computing; yields the list each replaced writer appends its name to when it runs (the
    caller checks every one ran)."""
    ran: List[str] = []
    modules: List[torch.nn.Module] = []
    forwards: List[Callable] = []
    for layer in attention:
        w = writers[layer]
        tuple_out = w.attn_out is w.attn  # an attention module returns (output, weights)
        modules.append(w.attn_out)
        forwards.append(_constant(attn_value, layer, f"attn {layer}", ran, tuple_out))
        if w.attn is not w.attn_out:
            modules.append(w.attn)
            forwards.append(_passthrough(tuple_out=True))
    for layer in mlps:
        w = writers[layer]
        modules.append(w.mlp_out)
        forwards.append(_constant(mlp_value, layer, f"mlp {layer}", ran, False))
        if w.mlp is not w.mlp_out:
            modules.append(w.mlp)
            forwards.append(_passthrough(tuple_out=False))
    with overriding(modules, "forward", lambda index, module: forwards[index]):  # runtime/overrides.py
        yield ran


def _constant(value: Value, layer: int, name: str, ran: List[str], tuple_out: bool):
    """A writer's replacement: `value(layer)`, in the writer's output form; its inputs are not read."""
    def forward(*args, **kwargs):
        ran.append(name)
        out = value(layer)
        return (out, None) if tuple_out else out
    return forward


def _passthrough(tuple_out: bool):
    """What a module before a replaced writer returns: its input, untouched (the writer ignores it)."""
    def forward(hidden_states=None, *args, **kwargs):
        return (hidden_states, None) if tuple_out else hidden_states
    return forward
