"""Attribution patching: the first-order estimate of every cell from one forward and one backward.

effect ~ (source - base activation) . d metric / d activation at the base run, summed over the
cell's slice. With a continuation metric (answers written continuation(...)) the forwards are
the base prompts followed by each continuation the metric reads (continuation.Sides, the same
padded batches exact patching runs): the metric linearised is the summed teacher-forced
log-probability; for the difference, the answer's forward minus the foil's, two different token
sequences after the prompt. Both forwards hold the same activations at prompt positions (the
model is causal), so the metric's gradient there is the sum of the two forwards' gradients; only
prompt positions are patched.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from .engines import _batch_size, _Plan, _prepare
from .grid import Grid, _has_hook


def attribution_patching(run, grid: Grid, batch_size: Optional[int] = None):
    """([cells, prompts] first-order estimate of each cell's change of the metric, pass counts):
    (source - base activation) . d metric / d activation over the cell's slice, from one
    forward and one backward of the base prompts per batch. With a continuation metric the
    forwards are the base prompts followed by each continuation the metric reads (one per
    side; _patching/continuation.py), the gradient at a prompt position is the sum of theirs,
    and only prompt positions are patched."""
    import torch

    plan, device, executor = _prepare(run, grid), run.device, run.executor
    n_prompts, n_positions = plan.base.shape
    index, layout = plan.index, grid.target.layout
    leaf = [("hook_embed", _grad_leaf)] if _has_hook(run, "hook_embed") else []

    def one_batch(rows: slice):
        prompts = torch.arange(rows.start, rows.stop)
        with torch.enable_grad():
            values, forwards = _metric_with_graph(run, plan, prompts, leaf)
            tensors = [acts[n] for acts in forwards for n in plan.names]
            grads = torch.autograd.grad(values.sum(), tensors, allow_unused=True)
        out = torch.zeros(len(grid.cells), len(prompts))
        for i, (layer, name) in enumerate(zip(plan.layers, plan.names)):
            grad = _summed([grads[k * len(plan.names) + i] for k in range(len(forwards))], layout, n_positions)
            if grad is None:  # nothing downstream reads it
                continue
            # a device_map leaves it on its layer's device
            act = _prompt_part(forwards[0][name].detach(), layout, n_positions).to(device)
            delta = index.aligned_source(plan.source[name], prompts, layout) - act
            per_slice = _per_position_head(layout, delta * grad.to(device))  # [n, pos, head]
            chosen = (index.layer == layer).nonzero().squeeze(1)
            s = per_slice[:, :, index.head[chosen].to(device)]  # [n, pos, cells]
            mask = index.cell_mask(chosen, prompts).to(device)   # [pos, cells] or [n, pos, cells]
            out[chosen] = (s * mask).sum(1).T.float().cpu()
        return out

    # the backward keeps every block's saved tensors alive per row, in every forward it sums over,
    # and the log-softmax of each position a continuation metric reads
    width, sides = plan.width, 1 if plan.sides is None else 2
    extra = sides * executor.graph_bytes_per_row(width)
    if plan.sides is not None:
        extra += sides * 3 * 4 * plan.sides.read_positions * run.cfg.d_vocab
    counted = executor.forwards
    with _batch_size(executor, batch_size):
        parts = executor.map_batches(n_prompts, width, one_batch, "attribution patching",
                                     extra_bytes_per_row=extra)
    plan.passes["forward_backward_passes"] = executor.forwards - counted
    return torch.cat(parts, dim=1), plan.passes


def _metric_with_graph(run, plan: "_Plan", prompts, leaf):
    """(metric of the base rows `prompts`, attached to the graph; [{hook name: activation}] per forward)."""
    from ...metrics import compute_metrics
    from ...runtime.executor import at_final
    from ...runtime.unembed import UNEMBED_INPUT

    if plan.sides is not None:
        return _continuation_with_graph(run, plan.sides, prompts, plan.names, leaf)
    acts = graph_forward(run, plan.base[prompts], plan.names, leaf)
    final = at_final(None if plan.final is None else plan.final[prompts])
    p = prompts.to(run.device)
    values = compute_metrics(final(acts[UNEMBED_INPUT]), plan.answers[p], plan.foils[p], [run.main_metric],
                             run.unembed)[run.metric]
    return values, [acts]


def graph_forward(run, tokens, names, leaf) -> Dict[str, Any]:
    """{hook name: activation} of one forward of `tokens` up to the unembedding's input, not detached
    (the graph reaches them, for a backward), `names` and the unembedding's input."""
    from ...runtime.unembed import UNEMBED_INPUT

    acts: Dict[str, Any] = {}

    def keep(name):
        def hook(act, hook=None):
            acts[name] = act
            return act
        return hook

    hooks = list(leaf) + [(n, keep(n)) for n in list(names) + [UNEMBED_INPUT]]
    run.executor.capture(tokens, {UNEMBED_INPUT: lambda a: a[:, -1]}, interventions=hooks,
                         stop_after=UNEMBED_INPUT)
    return acts


def _prompt_part(t, layout: str, n_positions: int):
    """The prompt positions of an activation of a forward that may run a continuation after them."""
    if layout == "pattern":  # [b, head, dest, src]: a prompt row attends to prompt positions only
        return t[:, :, :n_positions, :n_positions]
    return t[:, :n_positions]


def _summed(grads, layout: str, n_positions: int):
    """The metric's gradient at the prompt positions: the sum over the forwards that reach it."""
    found = [_prompt_part(g, layout, n_positions) for g in grads if g is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else sum(g.to(found[0].device) for g in found)


def _grad_leaf(act, hook=None):
    """Let gradients reach every activation even if the weights are frozen."""
    return act if act.requires_grad else act.detach().requires_grad_(True)


def _per_position_head(layout: str, product):
    """Sum a [batch, ...] product over the feature axis into [batch, pos, head]."""
    if layout == "resid":
        return product.sum(-1)[:, :, None]
    if layout == "head":
        return product.sum(-1)
    return product.sum(-1).transpose(1, 2)  # pattern [b, head, dest, src] -> [b, dest, head]


def _continuation_with_graph(run, sides, prompt, names, leaf):
    """Attribution patching's forwards: (the metric of rows `prompt` [R], still attached to the graph,
    and per forward run {hook name: activation [R, W, ...]}, not detached). One forward per side the
    metric reads (one for both when they feed the same tokens). At prompt positions every forward
    holds the same activations (a causal model never reads the continuation there), so the metric's
    gradient at a prompt position is the sum of the forwards' gradients."""
    from ...metrics import compute_continuation_metrics
    from ...runtime.continuation import readout_of
    from ...runtime.unembed import UNEMBED_INPUT

    forwards = []

    def forward(_side: str, batch):
        forwards.append(graph_forward(run, batch.tokens, names, leaf))
        return batch.keep()(forwards[-1][UNEMBED_INPUT])

    batches = {side: batch.rows(prompt) for side, batch in sides.batches.items()}
    readout = readout_of(batches, forward, run.unembed)
    return compute_continuation_metrics(readout, [run.main_metric])[run.metric], forwards
