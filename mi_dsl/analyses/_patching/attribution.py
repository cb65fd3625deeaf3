"""Attribution patching: the first-order estimate of every cell from one forward and one backward.

effect ~ (source - base activation) . d metric / d activation at the base run, summed over the
cell's slice. With a continuation metric (answers written continuation(...)) the forwards are
the base prompts followed by each continuation the metric reads (continuation.Sides, the same
padded batches exact patching runs): the metric linearised is the summed teacher-forced
log-probability; for the difference, the answer's forward minus the foil's, two different token
sequences after the prompt. Both forwards hold the same activations at prompt positions (the
model is causal), so the metric's gradient there is the sum of the two forwards' gradients; only
prompt positions are patched.

Positions before p, the first at which some base prompt differs from its source prompt, hold the
same activations in both runs: their delta is 0, and in a causal model nothing at positions >= p
changes them. So (prompts of one length, a metric read at the final position, any target but the
attention pattern, a model whose forward can continue after earlier keys and values: runtime/kv.py)
the forward and backward run positions p.. only, after the keys and values of positions < p (the
same tokens in both runs; one whole forward per distinct first p tokens records them); those positions
add 0 to every cell, as when they ran. The source activations then come from the base forwards where a
pair's source prompt is another pair's base prompt, and otherwise from the source prompt's positions p..
(partners.py): no sweep of every source prompt.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Dict, Optional

from .base_sweep import _same_until, keys_reusable
from .engines import _batch_size, _Plan, _prepare, base_and_source
from .partners import Partners, prefix_keys
from .grid import Grid, _has_hook


def attribution_patching(run, grid: Grid, batch_size: Optional[int] = None, reuse_prefix: bool = True):
    """([cells, prompts] first-order estimate of each cell's change of the metric, pass counts):
    (source - base activation) . d metric / d activation over the cell's slice, from one
    forward and one backward of the base prompts per batch. With a continuation metric the
    forwards are the base prompts followed by each continuation the metric reads (one per
    side; _patching/continuation.py), the gradient at a prompt position is the sum of theirs,
    and only prompt positions are patched. With `reuse_prefix` the forwards run positions p..
    only (`unchanged_prefix`; passes: `kv_reuse`, `first_position` p, and `token_work_saved`, the
    share of the forward and backward passes' positions not run); false runs every position (the
    same numbers)."""
    import torch

    skip = unchanged_prefix(run, grid) if reuse_prefix else 0
    plan, device, executor = _prepare(run, grid, capture_source=not skip), run.device, run.executor
    n_prompts, n_positions = plan.base.shape
    index, layout = plan.index, grid.target.layout
    leaf = [("hook_embed", _grad_leaf)] if _has_hook(run, "hook_embed") else []
    ran = n_positions - skip  # the prompt positions each forward runs: skip..
    partners, order, prefixes = None, torch.arange(n_prompts), 0
    if skip:  # the source activations from the base forwards where they hold them (partners.py)
        counted = executor.forwards
        plan.past = prefix_keys(run, plan.base, skip)
        prefixes = executor.forwards - counted
        partners = Partners.of(plan.base, run.tokens(base_and_source(grid.direction)[1]), skip)
        order = partners.order
    counted = executor.forwards

    def one_batch(rows: slice):
        prompts = order[rows]
        with torch.enable_grad():
            values, forwards = _metric_with_graph(run, plan, prompts, leaf, skip)
            tensors = [acts[n] for acts in forwards for n in plan.names]
            grads = torch.autograd.grad(values.sum(), tensors, allow_unused=True)
        # a device_map leaves each on its layer's device
        acts = {name: _prompt_part(forwards[0][name].detach(), layout, ran).to(device) for name in plan.names}
        sources = partners.sources(run, plan.past, prompts, acts, plan.names) if partners else None
        out = torch.zeros(len(grid.cells), len(prompts))
        for i, (layer, name) in enumerate(zip(plan.layers, plan.names)):
            grad = _summed([grads[k * len(plan.names) + i] for k in range(len(forwards))], layout, ran)
            if grad is None:  # nothing downstream reads it
                continue
            act = acts[name]
            source = sources[name] if sources is not None else index.aligned_source(plan.source[name], prompts, layout)
            delta = source - act
            per_slice = _per_position_head(layout, delta * grad.to(device))  # [n, pos, head]
            chosen = (index.layer == layer).nonzero().squeeze(1)
            s = per_slice[:, :, index.head[chosen].to(device)]  # [n, pos, cells]
            # [pos, cells] or [n, pos, cells] of positions skip..; those before add 0 (their delta is 0)
            mask = index.cell_mask(chosen, prompts).narrow(-2, skip, ran).to(device)
            out[chosen] = (s * mask).sum(1).T.float().cpu()
        return out

    # the backward keeps every block's saved tensors alive per row, in every forward it sums over,
    # and the log-softmax of each position a continuation metric reads
    width, sides = plan.width - skip, 1 if plan.sides is None else 2
    extra = sides * executor.graph_bytes_per_row(width, past=skip)
    if plan.sides is not None:
        extra += sides * 3 * 4 * plan.sides.read_positions * run.cfg.d_vocab
    with _batch_size(executor, batch_size):
        parts = executor.map_batches(n_prompts, width, one_batch, "attribution patching",
                                     extra_bytes_per_row=extra, past=skip)
    plan.passes.update(forward_backward_passes=executor.forwards - counted, kv_reuse=skip > 0, first_position=skip,
                       token_work_saved=round(skip / plan.width, 4))
    if partners is not None:  # the source prompts that ran, and the prefixes' forwards, are source forwards
        plan.passes.update(source_forwards=prefixes + partners.runs, prefix_forwards=prefixes,
                           sources_from_partners=partners.shared, sources_run=partners.captured)
        plan.passes["forward_backward_passes"] -= partners.runs
    effects = torch.empty(len(grid.cells), n_prompts)
    effects[:, order] = torch.cat(parts, dim=1)
    return effects, plan.passes


def unchanged_prefix(run, grid: Grid) -> int:
    """p: how many first positions the forward and backward need not run, because every base prompt
    is its source prompt's tokens there (`_same_until`); 0 when every position runs: prompts aligned
    by name, the attention pattern (a row at a position >= p holds columns < p), continuation metrics
    (their forwards append each side's continuation), a model whose forward cannot continue after
    earlier keys and values. A continued forward runs at least kv.exact_rest positions (then its
    numbers are the whole forward's), so p may stop before the first difference: the positions
    between add 0 as before."""
    from ...runtime import kv

    if grid.named is not None:
        return 0
    base = run.tokens(base_and_source(grid.direction)[0])
    same = _same_until(run, base, grid)
    if same == 0 or not keys_reusable(run, base, grid.target.layout, run.main_metric.reads_continuation):
        return 0
    return kv.continue_from(same, base.shape[1], int(run.executor.kv_rest))  # found by keys_reusable


def _metric_with_graph(run, plan: "_Plan", prompts, leaf, skip: int = 0):
    """(metric of the base rows `prompts`, attached to the graph; [{hook name: activation}] per forward);
    with `skip` the forward runs positions skip.. after plan.past's keys and values of those before."""
    from ...metrics import compute_metrics
    from ...runtime import kv
    from ...runtime.executor import at_final
    from ...runtime.unembed import UNEMBED_INPUT

    if plan.sides is not None:
        return _continuation_with_graph(run, plan.sides, prompts, plan.names, leaf)
    tokens = plan.base[prompts]
    options = {"position_ids": kv.positions(skip, tokens.shape[1], len(prompts), run.device)} if skip else None
    continued = kv.continuing(run.model, kv.take(plan.past, prompts, skip)) if skip else nullcontext()
    with continued:
        acts = graph_forward(run, tokens[:, skip:], plan.names, leaf, options)
    final = at_final(None if plan.final is None else plan.final[prompts] - skip)
    p = prompts.to(run.device)
    values = compute_metrics(final(acts[UNEMBED_INPUT]), plan.answers[p], plan.foils[p], [run.main_metric],
                             run.unembed)[run.metric]
    return values, [acts]


def graph_forward(run, tokens, names, leaf, forward_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """{hook name: activation} of one forward of `tokens` up to the unembedding's input, not detached
    (the graph reaches them, for a backward), `names` and the unembedding's input. `forward_kwargs`:
    the position_ids of a forward continued after earlier keys and values (runtime/kv.py)."""
    from ...runtime.unembed import UNEMBED_INPUT

    acts: Dict[str, Any] = {}

    def keep(name):
        def hook(act, hook=None):
            acts[name] = act
            return act
        return hook

    hooks = list(leaf) + [(n, keep(n)) for n in list(names) + [UNEMBED_INPUT]]
    run.executor.capture(tokens, {UNEMBED_INPUT: lambda a: a[:, -1]}, interventions=hooks,
                         stop_after=UNEMBED_INPUT, forward_kwargs=forward_kwargs)
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
