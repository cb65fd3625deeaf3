"""Exact patching (stacked patched rows) and what both engines share: the source run's activations,
the base tokens, the index of the cells (attribution.py is the other engine). The base prompts' sweep
that reuse reads is base_sweep.py."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .base_sweep import _base_run, _same_until, _source_rows, base_and_source, capture_all_positions
from .grid import Grid


@dataclass
class Baselines:
    clean: float
    corrupted: float

    @property
    def gap(self) -> float:
        return self.clean - self.corrupted

    def normalise(self, value: float) -> Optional[float]:
        if abs(self.gap) < 1e-12:
            return None
        return (value - self.corrupted) / self.gap


def direction_of(params) -> str:
    """The compiled parameters' direction (its default filled by the compiler)."""
    return params.direction


def baselines(run) -> Baselines:
    if "clean" in run.baselines and "corrupted" in run.baselines:
        return Baselines(run.baselines["clean"], run.baselines["corrupted"])
    from ...runtime.pipeline import pair_metrics

    final = pair_metrics(run.executor, run.unembed, run.pairs, [run.main_metric], "baselines")
    return Baselines(float(final["clean"][run.metric].mean()), float(final["corrupted"][run.metric].mean()))


class _PatchIndex:
    """Index tensors of the cells, to find the patched slices of any block of rows.

    Prompts of one length: mask [cells, positions], and a base position p takes the source
    run's position p. Prompts of several lengths (grid.named): mask [cells, prompts,
    positions] and source_of [prompts, positions], the source position of the same name
    (-1: never patched)."""

    def __init__(self, grid: Grid, n_prompts: int, n_positions: int):
        import torch

        cells, named = grid.cells, grid.named
        self.named = named is not None
        self.layer = torch.tensor([c.layer for c in cells])
        self.head = torch.tensor([max(c.head, 0) for c in cells])
        if not self.named:
            self.source_of = torch.arange(n_positions)
            self.mask = torch.zeros(len(cells), n_positions, dtype=torch.bool)
            for i, c in enumerate(cells):
                self.mask[i, list(c.positions)] = True
            return
        self.source_of = torch.full((n_prompts, n_positions), -1, dtype=torch.long)
        for p, mapping in enumerate(named.source_of):
            for base, source in mapping.items():
                self.source_of[p, base] = source
        self.mask = torch.zeros(len(cells), n_prompts, n_positions, dtype=torch.bool)
        for i, c in enumerate(cells):
            per_prompt = named.positions[c.grid_index[-1]] if grid.target.by_position else named.union
            for p, positions in enumerate(per_prompt):
                self.mask[i, p, list(positions)] = True

    def slices(self, cell, prompt, layer: int):
        """For rows whose cells are `cell` and prompts `prompt` ([R] each): the (row, source
        prompt, position, head, source position) of every patched slice at `layer`."""
        rows = (self.layer[cell] == layer).nonzero().squeeze(1)
        if not self.named:
            k, pos = self.mask[cell[rows]].nonzero(as_tuple=True)
            rows = rows[k]
            return rows, prompt[rows], pos, self.head[cell[rows]], self.source_of[pos]
        k, pos = self.mask[cell[rows], prompt[rows]].nonzero(as_tuple=True)
        rows = rows[k]
        return rows, prompt[rows], pos, self.head[cell[rows]], self.source_of[prompt[rows], pos]

    def cell_mask(self, chosen, prompts):
        """[positions, cells] (one length) or [prompts, positions, cells] of the chosen cells."""
        if not self.named:
            return self.mask[chosen].T
        return self.mask[chosen][:, prompts].permute(1, 2, 0)

    def aligned_source(self, source, prompts, layout: str):
        """The source run's activations of `prompts` at the base run's positions."""
        import torch

        if not self.named:
            return source[prompts]
        index = self.source_of[prompts].to(source.device)               # [n, positions]
        rows = torch.arange(index.shape[0], device=source.device)[:, None]
        picked = source[prompts][rows, index.clamp(min=0)]
        unmatched = (index < 0).view(*index.shape, *([1] * (picked.dim() - 2)))
        return picked.masked_fill(unmatched, 0)  # never patched: masked out of every cell


def _setter(layout: str, index, source):
    """A hook writing source[prompt, slice] into act[row, slice] for the index's slices."""
    rows, prompts, pos, heads, source_pos = index
    if layout == "resid":
        where, values = (rows, pos), source[prompts, source_pos]
    elif layout == "head":
        where, values = (rows, pos, heads), source[prompts, source_pos, heads]
    else:  # pattern [batch, head, dest, src]: whole rows of destination positions (one length only)
        where, values = (rows, heads, pos), source[prompts, heads, source_pos]

    def hook(act, hook=None):
        if act.requires_grad:
            act = act.clone()
        if layout == "pattern" and act.shape[-1] > values.shape[-1]:
            # a continuation follows the prompt: a prompt position attends to none of it (causal),
            # so the source row (captured without it) is exactly zero there
            import torch

            return _write(act, where, torch.nn.functional.pad(values, (0, act.shape[-1] - values.shape[-1])))
        return _write(act, where, values)

    return hook


def _write(act, where, values):
    # On the layer's own device: under a device_map it need not be the capture device.
    act[tuple(w.to(act.device) for w in where)] = values.to(act.device, act.dtype)
    return act


@dataclass
class _Plan:
    """What both methods need: the patched hooks, the source run's activations at every
    position, the base run's tokens and the index of the cells."""

    layers: List[int]
    names: List[str]
    source: Dict[str, Any]      # hook name -> [prompts, ...] activations of the source run
    base: Any                   # [prompts, positions] tokens of the base run
    index: "_PatchIndex"
    answers: Any
    foils: Any
    passes: Dict[str, Any]
    final: Any = None           # [prompts] each base prompt's final position (right-padded), or None
    base_name: str = "corrupted"   # which run is patched
    sides: Any = None           # continuation metrics: the base prompts with each side's continuation
    past: Any = None            # {layer: (keys, values)} [prompts, kv heads, p, d_head] of the first p positions
                                # (runtime/kv.py): attribution patching's, partners.py `prefix_keys`

    @property
    def width(self) -> int:
        """The widest forward of a patched row."""
        return self.base.shape[1] if self.sides is None else self.sides.width


def _prepare(run, grid: Grid, capture_source: bool = True) -> _Plan:
    """The plan both engines read; without `capture_source` (prompts of one length whose source
    activations come from elsewhere: attribution's partners.py, exact patching's base_sweep.py) `source`
    is left empty."""
    from ...runtime.executor import pad_right

    base_name, source_name = base_and_source(grid.direction)
    layers = sorted({c.layer for c in grid.cells})
    names = [grid.target.hook_name(l) for l in layers]
    counted = run.executor.forwards
    final = None
    if grid.named is None:
        base = run.tokens(base_name)
        source = capture_all_positions(run, source_name, names) if capture_source else {}
    else:  # prompts of several lengths: right-padded (never read past a prompt's own final token)
        source_tokens, _ = pad_right([getattr(p, source_name).ids for p in run.pairs])
        source = capture_all_positions(run, source_name, names, source_tokens)
        base, final = pad_right([getattr(p, base_name).ids for p in run.pairs])
    sides = None
    if run.main_metric.reads_continuation:
        from .continuation import Sides

        sides = Sides(run, base_name, capture_all_positions)
    return _Plan(layers, names, source, base, _PatchIndex(grid, base.shape[0], base.shape[1]),
                 run.answers().to(run.device), run.foils().to(run.device),
                 {"source_forwards": run.executor.forwards - counted}, final, base_name, sides)


def exact_patching(run, grid: Grid, batch_size: Optional[int] = None, reuse_prefix: bool = True):
    """([cells, prompts] metric of every cell's patched run, pass counts); many cells per forward.

    Cells run layer by layer, and within a layer by the first position any of them patches;
    in a batch, row r is the batch's cell r // prompts on prompt r % prompts. With
    `reuse_prefix` (and a model that allows it) a batch of layer-l cells whose patches all
    start at position p runs only blocks l..L-1 (from the base run's residual entering block
    l, runtime/prefix.py) and only positions p.. (after the base run's keys and values of
    positions < p, runtime/kv.py): neither blocks before a patch nor positions before it can
    change, so the numbers equal full recomputation."""
    import torch

    rows = _source_rows(run, grid) if reuse_prefix else None
    plan, layout = _prepare(run, grid, capture_source=rows is None), grid.target.layout
    n_prompts, n_positions = plan.base.shape[0], plan.width
    n_layers = run.cfg.n_layers
    resume, past = _base_run(run, plan, layout, rows) if reuse_prefix else (None, None)
    same = _same_until(run, plan.base, grid) if past is not None else 0
    out = torch.empty(len(grid.cells), n_prompts)
    counted, n_rows, blocks_run, tokens_run = run.executor.forwards, len(grid.cells) * n_prompts, 0, 0
    for layer, name in zip(plan.layers, plan.names):
        start = layer if resume is not None else 0
        latest = n_positions - run.executor.kv_rest if past is not None else 0  # runs >= kv.exact_rest positions
        for first, cells in _by_first_position(plan.index, layer, past is not None, latest, same):
            one_batch = _patched_batch(run, plan, layout, cells, name, resume, start, past, first)
            with _batch_size(run.executor, batch_size):
                parts = run.executor.map_batches(len(cells) * n_prompts, n_positions, one_batch,
                                                 f"patching {len(cells)} cells at layer {layer}")
            out[cells] = torch.cat(parts).view(len(cells), n_prompts).cpu()
            blocks_run += len(cells) * n_prompts * (n_layers - start)
            tokens_run += len(cells) * n_prompts * (n_layers - start) * (n_positions - first)
    full = n_rows * n_layers
    plan.passes.update(patched_rows=n_rows, patched_forwards=run.executor.forwards - counted,
                       prefix_reuse=resume is not None, blocks_run=blocks_run, blocks_full=full,
                       block_work_saved=round(1 - blocks_run / max(1, full), 4), kv_reuse=past is not None,
                       token_work_saved=round(1 - tokens_run / max(1, full * n_positions), 4))
    return out, plan.passes


def _by_first_position(index: "_PatchIndex", layer: int, split: bool, latest: int = 0, same: int = 0):
    """[(p, cells)]: the layer's cells grouped by the first position at which any of their patches
    can change something, at most `latest` (one group, p = 0, when keys and values are not
    reused). Before `same` the base and source prompts are the same tokens, so their activations
    are the same numbers and a patch there writes what is already there."""
    import torch

    cells = (index.layer == layer).nonzero().squeeze(1)
    if not split:
        return [(0, cells)]
    touched = index.mask[cells]
    touched = touched.reshape(len(cells), -1, touched.shape[-1]).any(1)  # [cells, positions], any prompt
    touched[:, :same] = False
    first = torch.where(touched.any(1), touched.float().argmax(1), torch.full((len(cells),), latest, dtype=torch.long))
    first = first.clamp(max=max(0, latest))
    return [(int(p), cells[first == p]) for p in sorted(set(first.tolist()))]


def _patched_batch(run, plan: "_Plan", layout: str, cells, name: str, resume, start: int, past=None,
                   first: int = 0):
    """fn(rows) -> metric of the rows (cell cells[r // prompts], prompt r % prompts) of one layer;
    only positions `first`.. run when `past` (the base run's keys and values) is given."""
    import torch

    from ...metrics import compute_metrics
    from ...runtime import kv
    from ...runtime.executor import at_final
    from ...runtime.prefix import resume_at
    from ...runtime.unembed import UNEMBED_INPUT
    from .continuation import patched_metric

    device, n_prompts = run.device, plan.base.shape[0]
    layer = int(plan.index.layer[cells[0]])
    p = first if past is not None else 0

    def one_batch(rows: slice):
        r = torch.arange(rows.start, rows.stop)
        cell, prompt = cells[r // n_prompts], r % n_prompts
        found = plan.index.slices(cell, prompt, layer)
        keep = found[2] >= p  # a patch before p writes the base run's own values (_by_first_position)
        found = [t[keep] for t in found]
        found[2] = found[2] - p  # positions within the forward, which starts at p
        hooks = [(name, _setter(layout, [t.to(device) for t in found], plan.source[name]))]
        if plan.sides is not None:
            return patched_metric(run, plan.sides, prompt, hooks, start, plan.layers, resume is not None)
        resid = resume[start][prompt.to(resume[start].device)][:, p:] if start > 0 else None
        select = at_final(None if plan.final is None else plan.final[prompt] - p)
        extra = {"position_ids": kv.positions(p, plan.base.shape[1], len(prompt), device)} if p else None
        continued = kv.continuing(run.model, kv.take(past, prompt, p)) if p else nullcontext()
        with resume_at(run.model, start, resid), continued:
            _, kept = run.executor.capture(plan.base[prompt][:, p:], {UNEMBED_INPUT: select}, interventions=hooks,
                                           stop_after=UNEMBED_INPUT, forward_kwargs=extra)
        q = prompt.to(device)
        return compute_metrics(kept[UNEMBED_INPUT], plan.answers[q], plan.foils[q], [run.main_metric],
                               run.unembed)[run.metric]

    return one_batch


class _batch_size:
    """Temporarily run the executor with a fixed number of rows per forward."""

    def __init__(self, executor, size: Optional[int]):
        self.executor, self.size = executor, size

    def __enter__(self):
        self.saved = self.executor.batch_size
        if self.size is not None:
            self.executor.batch_size = self.size

    def __exit__(self, *exc):
        self.executor.batch_size = self.saved
