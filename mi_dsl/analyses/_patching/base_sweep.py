"""The base prompts' sweep that exact patching's reuse reads (engines.py `exact_patching`): the residual
entering each patched layer, every layer's keys and values, and, where every source prompt is a base
prompt (symmetric pairs), the source activations as its rows of the same tokens (`same_rows`). The
interchange's base sweep is the same `sweep`."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

from ...errors import RunError
from .grid import Grid


def base_and_source(direction: str) -> Tuple[str, str]:
    """(the run that is patched, the run whose activations are patched in)."""
    return ("corrupted", "clean") if direction == "denoising" else ("clean", "corrupted")


def capture_all_positions(run, which: str, names: Sequence[str], tokens=None):
    """{hook name: [N, ...]} every position of the named hooks, one batched sweep of `which`
    (or of `tokens`, e.g. right-padded prompts of several lengths)."""
    import torch

    from ...runtime.executor import ALL

    tokens = run.tokens(which) if tokens is None else tokens
    keep = {name: ALL for name in names}
    last = names[-1]  # names are in forward order; nothing after the last one is needed

    def one_batch(rows: slice):
        return run.executor.capture(tokens[rows], keep, stop_after=last)[1]

    parts = run.executor.map_batches(len(tokens), tokens.shape[1], one_batch, f"capturing {which} activations")
    return {name: torch.cat([p[name] for p in parts]) for name in names}


def _same_until(run, base, grid: Grid) -> int:
    """The first position at which some base prompt (`base`: their tokens) differs from its source
    prompt (prompts of one length; 0 for prompts aligned by name, whose positions need not match)."""
    if grid.named is not None:
        return 0
    from ...runtime.kv import first_difference

    source = run.tokens(base_and_source(grid.direction)[1])
    return first_difference(base, source) if source.shape == base.shape else 0


def _source_rows(run, grid: Grid):
    """[prompts] for each source prompt the index of a base prompt of the same tokens, when the base sweep
    records keys and values (`keys_reusable`: it then runs every block) and every source prompt is a base
    prompt; else None, and the source prompts are swept on their own."""
    if grid.named is not None:
        return None
    base_name, source_name = base_and_source(grid.direction)
    base = run.tokens(base_name)
    if not keys_reusable(run, base, grid.target.layout, run.main_metric.reads_continuation):
        return None
    return rows_in(run.tokens(source_name), base)


def keys_reusable(run, base, layout: str, continuation: bool) -> bool:
    """Can forwards of the base prompts `base` [n, S] continue after their keys and values? Not for the
    attention pattern (a row at a later position holds the earlier columns), continuation metrics (their
    forwards append each side's continuation), one-token prompts, or a model whose forward cannot
    continue (kv.exact_rest 0)."""
    from ...runtime.shared_prefix import continuable

    if continuation or layout == "pattern" or base.shape[1] < 2:
        return False
    return continuable(run.executor, base.tolist()) > 0


def rows_in(source, base):
    """[n] for each row of `source` the index of a row of `base` with the same tokens (`same_rows`), or
    None when some source row is no base row."""
    import torch

    found = same_rows(source, base)
    return None if any(i is None for i in found) else torch.tensor(found, dtype=torch.long)


def same_rows(source, base) -> List[Optional[int]]:
    """For each row of `source` [n, S] the index of a row of `base` [m, S] with the same tokens (the same
    activations at every position), or None; every row None when the widths differ."""
    if source.shape[1:] != base.shape[1:]:
        return [None] * len(source)
    where: Dict[tuple, int] = {}
    for i, row in enumerate(base.tolist()):
        where.setdefault(tuple(row), i)
    return [where.get(tuple(row)) for row in source.tolist()]


def _base_run(run, plan, layout: str, source_rows=None):
    """One sweep of the base prompts (`plan`: engines._Plan) for what reuse needs: ({layer: residual
    entering it}, or None when blocks cannot be resumed; every layer's keys and values, or None when
    they cannot be reused: continuation metrics, attention-pattern targets, a model without the seam).

    `source_rows` (`_source_rows`; `_prepare` then left `plan.source` empty): the sweep records keys and
    values, so it runs every block, and every source prompt is a base prompt (symmetric pairs): it also
    keeps the patched hooks, and the source activations are its rows of the same tokens."""
    from ...runtime import kv
    from ...runtime.prefix import block_returns_tensor

    layers = [l for l in plan.layers if l > 0]
    if layers and run.executor.resumable is None:  # one short probe forward per model
        run.executor.resumable = block_returns_tensor(run.model, plan.base)
    resumable = bool(layers) and bool(run.executor.resumable)
    reuse_kv = keys_reusable(run, plan.base, layout, plan.sides is not None)  # as `_source_rows` decided
    if plan.sides is not None:  # each side's inputs are captured when it first runs
        return ({} if resumable else None), None
    if not resumable and not reuse_kv:
        return None, None
    names = [f"blocks.{l}.hook_resid_pre" for l in layers] if resumable else []
    # padded as the patched batches are
    past: Optional[kv.KV] = None
    if reuse_kv:
        shared = list(dict.fromkeys(names + (plan.names if source_rows is not None else [])))
        captured, _, past = sweep(run, plan.base, shared, what=f"capturing {plan.base_name} activations")
        if past is None:  # kv.exact_rest found the seam on every layer before this runs
            raise RunError("internal: the keys and values of some layer were not recorded")
        if source_rows is not None:
            plan.source = {name: captured[name][source_rows] for name in plan.names}
            plan.passes["source_from_base"] = True
    else:
        captured = capture_all_positions(run, plan.base_name, names, plan.base)
    resume = {l: captured[n] for l, n in zip(layers, names)} if resumable else None
    return resume, past


def sweep(run, tokens, names: Sequence[str], final=None, keys: bool = True, what: str = "capturing base activations"):
    """({hook name: [n, S, ...]} every position of `names`, [n, d] the unembedding input at each final
    position (`final` [n]; None: the last column), with `keys` every layer's keys and values [n, kv heads,
    S, d_head] (None when a batch missed a layer), else None) from one sweep of `tokens` [n, S] to the
    unembedding's input: every block runs, so every layer's keys are recorded. Each batch records into
    its own store, kept only when the batch returns: a batch that runs out of memory and is split leaves
    nothing behind, wherever it failed. Users: exact patching's base run, the interchange's base sweep."""
    import torch

    from ...runtime import kv
    from ...runtime.executor import ALL, at_final
    from ...runtime.unembed import UNEMBED_INPUT

    def one_batch(rows: slice):
        keep = {name: ALL for name in names}
        keep[UNEMBED_INPUT] = at_final(None if final is None else final[rows])
        store: kv.KV = {}
        with kv.recording(run.model, store) if keys else nullcontext():
            kept = run.executor.capture(tokens[rows], keep, stop_after=UNEMBED_INPUT)[1]
        return kept, store

    parts = run.executor.map_batches(len(tokens), tokens.shape[1], one_batch, what)
    captured = {name: torch.cat([kept[name] for kept, _ in parts]) for name in list(names) + [UNEMBED_INPUT]}
    past = kv.joined([store for _, store in parts], run.cfg.n_layers) if keys else None
    return captured, captured.pop(UNEMBED_INPUT), past
