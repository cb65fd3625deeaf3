"""What activation patching and attribution patching share (torch imported lazily).

A patching analysis names a *target* activation, a *direction* and optional layer, head
and position selectors. Compiling checks them without torch; computing resolves them
into *cells*, each one patch: (layer, head or none, positions). Then

  exact (activation_patching)
      many cells per forward: the base prompts are repeated once per cell (rows = cells x
      prompts, as many as fit the memory budget) and the hook of each layer overwrites,
      in the rows of that layer's cells only, the cell's slice with the source run's
      activation. The forward stops at the unembedding's input; the metric reads the
      final position from unembedding columns.
  attribution (attribution_patching)
      one forward and one backward of the base prompts per batch:
      effect ~ (source - base activation) . d metric / d activation, summed over the
      cell's slice (d_head or d_model, and its positions).

Directions, in TransformerLens's terms:
  denoising (default)  run the corrupted prompts and patch in clean activations
                       (TransformerLens's patching functions and the IOI tutorial):
                       how much of the clean behaviour does this activation restore?
  noising              run the clean prompts and patch in corrupted activations:
                       how much of the clean behaviour does corrupting it destroy?
Both are normalised the same way, on the mean over prompts: 0 = the corrupted
baseline, 1 = the clean baseline, (m - corrupted) / (clean - corrupted). Denoising
cells start at 0 (no effect); noising cells start at 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import RunError, SpecMeaningError
from .base import step


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    hook: str            # hook name, "{layer}" for the layer
    layout: str          # "resid" [batch, pos, d] | "head" [batch, pos, head, d] | "pattern" [batch, head, dest, src]
    by_position: bool    # one cell per position; else one per (layer, head) over the selected positions
    what: str
    kv: bool = False     # the head axis counts key/value heads (grouped-query models)

    @property
    def has_heads(self) -> bool:
        return self.layout != "resid"

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    @property
    def axes(self) -> Tuple[str, ...]:
        if not self.has_heads:
            return ("layer", "position")
        return ("layer", "head", "position") if self.by_position else ("layer", "head")


def _targets() -> Dict[str, Target]:
    out = {
        "resid_pre": Target("resid_pre", "blocks.{layer}.hook_resid_pre", "resid", True,
                            "the residual stream entering each layer"),
        "resid_mid": Target("resid_mid", "blocks.{layer}.hook_resid_mid", "resid", True,
                            "the residual stream between attention and MLP (not in parallel-residual models)"),
        "attn_out": Target("attn_out", "blocks.{layer}.hook_attn_out", "resid", True,
                           "each layer's attention output"),
        "mlp_out": Target("mlp_out", "blocks.{layer}.hook_mlp_out", "resid", True, "each layer's MLP output"),
    }
    heads = {"z": ("attn.hook_z", "each head's output (hook_z)", False),
             "q": ("attn.hook_q", "each head's queries", False),
             "k": ("attn.hook_k", "each key/value head's keys", True),
             "v": ("attn.hook_v", "each key/value head's values", True),
             "pattern": ("attn.hook_pattern", "each head's attention pattern (by destination position)", False)}
    for name, (hook, what, kv) in heads.items():
        layout = "pattern" if name == "pattern" else "head"
        full = "blocks.{layer}." + hook
        out[name] = Target(name, full, layout, False, what + ", all selected positions at once", kv)
        out[f"{name}_by_position"] = Target(f"{name}_by_position", full, layout, True, what + ", one position at a time", kv)
    return out


TARGETS: Dict[str, Target] = _targets()
HEAD_TARGETS = sorted(n for n, t in TARGETS.items() if t.has_heads)
DIRECTIONS = ("denoising", "noising")

_SELECTOR = {"type": ["string", "integer"]}

PARAMS: Dict[str, Any] = {
    "target": {"type": "string", "enum": list(TARGETS),
               "description": "Which activation to patch: resid_pre, resid_mid, attn_out, mlp_out (a layer x "
                              "position grid); z, q, k, v, pattern (each head at all selected positions at once: "
                              "a layer x head grid; k and v per key/value head); z_by_position, q_by_position, "
                              "k_by_position, v_by_position, pattern_by_position (layer x head x position; for the pattern, "
                              "the destination position). Default z."},
    "direction": {"type": "string", "enum": list(DIRECTIONS),
                  "description": "denoising (default, TransformerLens's convention): run the corrupted prompts and "
                                 "patch in clean activations; noising: run the clean prompts and patch in "
                                 "corrupted activations. Scores are normalised alike: 0 = corrupted baseline, "
                                 "1 = clean baseline."},
    "positions": {"type": ["string", "integer", "array"], "items": _SELECTOR, "minItems": 1,
                  "description": "Position selector(s), e.g. final, descriptor, noun#2[-1], 4, named in the clean "
                                 "prompts (default: every position). Each selector is one column; one naming "
                                 "several tokens (a slot) patches them together. All-position head targets (z, q, "
                                 "k, v, pattern) patch the union of the selected positions."},
    "layers": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
               "description": "Only these layers (default: all)."},
    "heads": {"type": ["string", "array"], "items": {"type": "string"}, "minItems": 1,
              "description": "Head selector(s) for head targets, e.g. L8H2, L10H*, top(head_attr, 12) (default: "
                             "all heads). For k and v on grouped-query models a query head selects the key/value "
                             "head it reads."},
    "batch_size": {"type": "integer", "minimum": 1,
                   "description": "Rows per forward pass (for exact patching a row is one patched prompt; "
                                  "default: the run's batch size, or what fits the memory budget)."},
    "top_k": {"type": "integer", "minimum": 1,
              "description": "How many of the largest effects to list (default 10)."},
}


def _items(value) -> List:
    return list(value) if isinstance(value, list) else [value]


def compile_patching(params: Dict[str, Any], ctx, description: str):
    """The plan step of a patching analysis; every selector is parsed and checked here."""
    from ..expr import parse_positions

    target = TARGETS[params.get("target", "z")]
    if "heads" in params and not target.has_heads:
        raise SpecMeaningError(f"target '{target.name}' has no heads to select; `heads` applies to "
                               f"{', '.join(HEAD_TARGETS)}", ctx.where("heads"))
    ctx.heads(params)
    if "positions" in params:
        slots = ctx.slots()
        value = params["positions"]
        for i, item in enumerate(_items(value)):
            path = ctx.path("positions", i) if isinstance(value, list) else ctx.path("positions")
            parse_positions(str(item), slots, where=lambda off, p=path: ctx.spec.source.inside(p, off))
    refs = tuple(dict.fromkeys(ref for ref, _ in ctx.references))
    hooks = (target.hook.replace("{layer}", "{L}"), "unembed.hook_in")
    return step(ctx, params, description, hooks=hooks, positions="all", depends_on=refs)


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Column:
    """One position column: the positions patched together and how to show them."""

    label: str
    indices: Tuple[int, ...]
    tokens: Tuple[str, ...]
    slot: Optional[str]

    def to_json(self) -> Dict[str, Any]:
        return {"label": self.label, "indices": list(self.indices), "tokens": list(self.tokens), "slot": self.slot}


@dataclass(frozen=True)
class Cell:
    layer: int
    head: int                     # -1 for residual targets
    positions: Tuple[int, ...]
    grid_index: Tuple[int, ...]   # where its value sits in the result grid
    label: str


@dataclass
class Grid:
    """The resolved selection: the cells and the axes of the result grid."""

    target: Target
    layers: List[int]
    heads: List[int]             # the head axis: every query head, or key/value head for k/v
    head_labels: List[str]       # column labels of the head axis ("H2", or "KV0")
    columns: List[Column]        # position columns (by-position targets)
    patched_positions: Tuple[int, ...]  # all-position head targets: what each cell patches
    cells: List[Cell]

    @property
    def shape(self) -> Tuple[int, ...]:
        if not self.target.has_heads:
            return (len(self.layers), len(self.columns))
        if self.target.by_position:
            return (len(self.layers), len(self.heads), len(self.columns))
        return (len(self.layers), len(self.heads))


def resolve(params: Dict[str, Any], run) -> Grid:
    target = TARGETS[params.get("target", "z")]
    cfg = run.cfg
    n_layers = cfg.n_layers
    layers = list(range(n_layers))
    if "layers" in params:
        bad = [l for l in params["layers"] if l >= n_layers]
        if bad:
            raise RunError(f"layer {bad[0]} is out of range: the model has {n_layers} layers "
                           f"(0 to {n_layers - 1})", run.where("layers"))
        layers = sorted(set(params["layers"]))
    if target.name.startswith("resid_mid") and not _has_hook(run, target.hook_name(0)):
        raise RunError("this model has no resid_mid (attention and MLP read the same residual in parallel)",
                       run.where("target"), hint="patch resid_pre, attn_out or mlp_out instead")
    n_heads = head_count(cfg, target)
    chosen = _selected_heads(params, run, target, n_heads)
    columns = _columns(params, run)
    tokens_len = len(run.pairs[0].clean.ids)
    patched = tuple(sorted({i for c in columns for i in c.indices})) if "positions" in params \
        else tuple(range(tokens_len))
    heads = list(range(n_heads))
    if chosen is not None:
        layers = [l for l in layers if any(cl == l for cl, _ in chosen)]
        if not layers:
            raise RunError("the head selector and `layers` select no head together", run.where("heads"))
    head_labels = [head_axis_label(target, cfg, h) for h in heads]
    cells: List[Cell] = []
    for li, layer in enumerate(layers):
        if not target.has_heads:
            cells += [Cell(layer, -1, col.indices, (li, ci), f"L{layer} {col.label}")
                      for ci, col in enumerate(columns)]
            continue
        for hi, head in enumerate(heads):
            if chosen is not None and (layer, head) not in chosen:
                continue
            name = cell_head_label(target, cfg, layer, head)
            if target.by_position:
                cells += [Cell(layer, head, col.indices, (li, hi, ci), f"{name} {col.label}")
                          for ci, col in enumerate(columns)]
            else:
                cells.append(Cell(layer, head, patched, (li, hi), name))
    return Grid(target, layers, heads, head_labels, columns if target.by_position else [], patched, cells)


def head_count(cfg, target: Target) -> int:
    if target.kv:
        return getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return cfg.n_heads


def _grouped(cfg, target: Target) -> bool:
    return target.kv and head_count(cfg, target) != cfg.n_heads


def head_axis_label(target: Target, cfg, head: int) -> str:
    return f"KV{head}" if _grouped(cfg, target) else f"H{head}"


def cell_head_label(target: Target, cfg, layer: int, head: int) -> str:
    return f"L{layer}{head_axis_label(target, cfg, head)}"


def _has_hook(run, name: str) -> bool:
    try:
        return name in run.model.hook_dict
    except AttributeError:
        return True


def _selected_heads(params, run, target: Target, n_heads: int) -> Optional[set]:
    """{(layer, head-axis index)} the head selectors name, or None for every head."""
    if "heads" not in params:
        return None
    from ..expr import Env, parse_heads

    value = params["heads"]
    cfg = run.cfg
    env = Env(n_layers=cfg.n_layers, n_heads=cfg.n_heads, result=lambda name: head_table(run, name))
    group = cfg.n_heads // n_heads
    chosen = set()
    for i, text in enumerate(_items(value)):
        path = ("analyses", run.analysis_index, "heads") + ((i,) if isinstance(value, list) else ())
        compiled = parse_heads(str(text), None, where=lambda off, p=path: run.spec.source.inside(p, off))
        chosen |= {(layer, head // group) for layer, head in compiled.evaluate(env)}
    return chosen


def head_table(run, name: str):
    """An earlier analysis's [layer][head] scores, for top()/bottom() (None if it has none)."""
    result = run.results.get(name)
    return None if result is None else result.data.get("per_head")


def _columns(params, run) -> List[Column]:
    first = run.pairs[0].clean
    tokens = run.tokenizer.token_strs(first.ids)
    slot_at = _slot_names(first.spans)
    if "positions" not in params:
        return [Column(_position_label(i, tokens[i], slot_at.get(i)), (i,), (tokens[i],), slot_at.get(i))
                for i in range(len(first.ids))]
    from ..dataset import slot_vocabularies
    from ..expr import Env, parse_positions

    value = params["positions"]
    slots = list(slot_vocabularies(run.spec, run.spec.prompts["template"]))
    columns: List[Column] = []
    for i, item in enumerate(_items(value)):
        if str(item) in {str(x) for x in _items(value)[:i]}:
            continue  # the same selector twice is one column
        path = ("analyses", run.analysis_index, "positions") + ((i,) if isinstance(value, list) else ())
        compiled = parse_positions(str(item), slots, where=lambda off, p=path: run.spec.source.inside(p, off))
        resolved = None
        for pair in run.pairs:  # slots are named in the clean prompts (a corrupted template may move them)
            prompt = pair.clean
            got = tuple(compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans)))
            if resolved is None:
                resolved = got
            elif got != resolved:
                raise RunError(f"position selector '{item}' names positions {list(resolved)} in one prompt "
                               f"and {list(got)} in another ('{prompt.text}'); patching needs the same "
                               "positions in every prompt", run.spec.source.value(path),
                               hint="filter the vocabularies so each slot has one token count")
        slot_names = {slot_at.get(p) for p in resolved}
        slot = slot_names.pop() if len(slot_names) == 1 else None
        shown = " ".join(repr(tokens[p]) for p in resolved)
        columns.append(Column(f"{item} @{','.join(map(str, resolved))} {shown}", resolved,
                              tuple(tokens[p] for p in resolved), slot))
    return columns


def _slot_names(spans) -> Dict[int, str]:
    out = {}
    for slot, occurrences in spans.items():
        for n, (start, end) in enumerate(occurrences, 1):
            for p in range(start, end):
                out[p] = slot if n == 1 else f"{slot}#{n}"
    return out


def _position_label(index: int, token: str, slot: Optional[str]) -> str:
    return f"{index} {token!r}" + (f" [{slot}]" if slot else "")


# --------------------------------------------------------------------------- runs


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
    return params.get("direction", "denoising")


def base_and_source(direction: str) -> Tuple[str, str]:
    """(the run that is patched, the run whose activations are patched in)."""
    return ("corrupted", "clean") if direction == "denoising" else ("clean", "corrupted")


def baselines(run) -> Baselines:
    if "clean" in run.baselines and "corrupted" in run.baselines:
        return Baselines(run.baselines["clean"], run.baselines["corrupted"])
    from ..runtime.pipeline import pair_metrics

    final = pair_metrics(run.executor, run.unembed, run.pairs, [run.metric], "baselines")
    return Baselines(float(final["clean"][run.metric].mean()), float(final["corrupted"][run.metric].mean()))


def capture_all_positions(run, which: str, names: Sequence[str]):
    """{hook name: [N, ...]} every position of the named hooks, one batched sweep of `which`."""
    import torch

    from ..runtime.executor import ALL

    tokens = run.tokens(which)
    keep = {name: ALL for name in names}
    last = names[-1]  # names are in forward order; nothing after the last one is needed

    def one_batch(rows: slice):
        return run.executor.capture(tokens[rows], keep, stop_after=last)[1]

    parts = run.executor.map_batches(len(tokens), tokens.shape[1], one_batch, f"capturing {which} activations")
    return {name: torch.cat([p[name] for p in parts]) for name in names}


class _PatchIndex:
    """Index tensors of the cells, to find the patched slices of any block of rows."""

    def __init__(self, cells: Sequence[Cell], n_positions: int):
        import torch

        self.layer = torch.tensor([c.layer for c in cells])
        self.head = torch.tensor([max(c.head, 0) for c in cells])
        self.mask = torch.zeros(len(cells), n_positions, dtype=torch.bool)
        for i, c in enumerate(cells):
            self.mask[i, list(c.positions)] = True

    def slices(self, cell, prompt, layer: int):
        """For rows whose cells are `cell` and prompts `prompt` ([R] each): the (row, source
        prompt, position, head) of every patched slice at `layer`."""
        rows = (self.layer[cell] == layer).nonzero().squeeze(1)
        k, pos = self.mask[cell[rows]].nonzero(as_tuple=True)
        rows = rows[k]
        return rows, prompt[rows], pos, self.head[cell[rows]]


def _setter(layout: str, index, source):
    """A hook writing source[prompt, slice] into act[row, slice] for the index's slices."""
    rows, prompts, pos, heads = index
    if layout == "resid":
        where, values = (rows, pos), source[prompts, pos]
    elif layout == "head":
        where, values = (rows, pos, heads), source[prompts, pos, heads]
    else:  # pattern [batch, head, dest, src]: patch whole rows of destination positions
        where, values = (rows, heads, pos), source[prompts, heads, pos]

    def hook(act, hook=None):
        if act.requires_grad:
            act = act.clone()
        act[where] = values.to(act.dtype)
        return act

    return hook


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
    passes: Dict[str, int]


def _prepare(run, grid: Grid, direction: str) -> _Plan:
    base_name, source_name = base_and_source(direction)
    layers = sorted({c.layer for c in grid.cells})
    names = [grid.target.hook_name(l) for l in layers]
    counted = run.executor.forwards
    source = capture_all_positions(run, source_name, names)
    base = run.tokens(base_name)
    return _Plan(layers, names, source, base, _PatchIndex(grid.cells, base.shape[1]),
                 run.answers().to(run.device), run.foils().to(run.device),
                 {"source_forwards": run.executor.forwards - counted})


def exact_patching(run, grid: Grid, direction: str, batch_size: Optional[int] = None):
    """([cells, prompts] metric of every cell's patched run, pass counts); many cells per forward.

    Row r of the stacked batch is cell r // prompts on prompt r % prompts."""
    import torch

    from ..runtime.metrics import UNEMBED_INPUT, compute_metrics

    plan, device, layout = _prepare(run, grid, direction), run.device, grid.target.layout
    n_prompts, n_positions = plan.base.shape

    def one_batch(rows: slice):
        r = torch.arange(rows.start, rows.stop)
        cell, prompt = r // n_prompts, r % n_prompts
        hooks = []
        for layer, name in zip(plan.layers, plan.names):
            found = plan.index.slices(cell, prompt, layer)
            if len(found[0]):  # only the layers whose cells are in this batch get a hook
                hooks.append((name, _setter(layout, [t.to(device) for t in found], plan.source[name])))
        _, kept = run.executor.capture(plan.base[prompt], {UNEMBED_INPUT: lambda a: a[:, -1]},
                                       interventions=hooks, stop_after=UNEMBED_INPUT)
        p = prompt.to(device)
        return compute_metrics(kept[UNEMBED_INPUT], plan.answers[p], plan.foils[p], [run.metric],
                               run.unembed)[run.metric]

    counted, n_rows = run.executor.forwards, len(grid.cells) * n_prompts
    with _batch_size(run.executor, batch_size):
        parts = run.executor.map_batches(n_rows, n_positions, one_batch, f"patching {len(grid.cells)} cells")
    plan.passes.update(patched_rows=n_rows, patched_forwards=run.executor.forwards - counted)
    return torch.cat(parts).view(len(grid.cells), n_prompts).cpu(), plan.passes


def attribution_patching(run, grid: Grid, direction: str, batch_size: Optional[int] = None):
    """([cells, prompts] first-order estimate of each cell's change of the metric, pass counts):
    (source - base activation) . d metric / d activation over the cell's slice, from one
    forward and one backward of the base prompts per batch."""
    import torch

    from ..runtime.metrics import UNEMBED_INPUT, compute_metrics

    plan, device, executor = _prepare(run, grid, direction), run.device, run.executor
    n_prompts, n_positions = plan.base.shape
    index = plan.index
    leaf = [("hook_embed", _grad_leaf)] if _has_hook(run, "hook_embed") else []

    def one_batch(rows: slice):
        acts: Dict[str, Any] = {}

        def keep(name):
            def hook(act, hook=None):
                acts[name] = act  # not detached: the graph reaches it
                return act
            return hook

        hooks = leaf + [(n, keep(n)) for n in plan.names + [UNEMBED_INPUT]]
        with torch.enable_grad():
            executor.capture(plan.base[rows], {UNEMBED_INPUT: lambda a: a[:, -1]}, interventions=hooks,
                             stop_after=UNEMBED_INPUT)
            values = compute_metrics(acts[UNEMBED_INPUT][:, -1], plan.answers[rows], plan.foils[rows],
                                     [run.metric], run.unembed)[run.metric]
            grads = torch.autograd.grad(values.sum(), [acts[n] for n in plan.names], allow_unused=True)
        out = torch.zeros(len(grid.cells), rows.stop - rows.start)
        for layer, name, grad in zip(plan.layers, plan.names, grads):
            if grad is None:  # nothing downstream reads it
                continue
            delta = plan.source[name][rows] - acts[name].detach()
            per_slice = _per_position_head(grid.target.layout, delta * grad)  # [n, pos, head]
            chosen = (index.layer == layer).nonzero().squeeze(1)
            s = per_slice[:, :, index.head[chosen].to(device)]  # [n, pos, cells]
            mask = index.mask[chosen].T.to(device)               # [pos, cells]
            out[chosen] = (s * mask).sum(1).T.float().cpu()
        return out

    # the backward keeps a few activations of every block alive per row
    extra = 3 * 4 * n_positions * (run.cfg.d_model * 4 + run.cfg.n_heads * n_positions)
    counted = executor.forwards
    with _batch_size(executor, batch_size):
        parts = executor.map_batches(n_prompts, n_positions, one_batch, "attribution patching",
                                     extra_bytes_per_row=extra)
    plan.passes["forward_backward_passes"] = executor.forwards - counted
    return torch.cat(parts, dim=1), plan.passes


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


# --------------------------------------------------------------------------- results


def summarise(grid: Grid, per_prompt, base: Baselines, params, run, extra: Dict[str, Any]):
    """(Result.data, table rows) of a grid of patched metrics (per cell and prompt)."""
    means = per_prompt.mean(1).tolist()
    values = _empty(grid.shape)
    normalised = _empty(grid.shape)
    labels = _empty(grid.shape)
    rows = []
    for cell, value in zip(grid.cells, means):
        norm = base.normalise(value)
        _put(values, cell.grid_index, value)
        _put(normalised, cell.grid_index, norm)
        _put(labels, cell.grid_index, cell.label)
        rows.append(_row(grid, cell, value, norm, run))
    resting = base.corrupted if base_and_source(direction_of(params))[0] == "corrupted" else base.clean
    order = sorted(range(len(rows)), key=lambda i: -abs(rows[i]["value"] - resting))
    top = [rows[i] for i in order[:params.get("top_k", 10)]]
    target = grid.target
    data = {
        "target": target.name, "hook": target.hook.replace("{layer}", "{L}"), "direction": direction_of(params),
        "metric": run.metric, "axes": list(target.axes),
        "layers": grid.layers,
        "heads": grid.head_labels if target.has_heads else None,
        "positions": [c.to_json() for c in grid.columns] if grid.columns else None,
        "patched_positions": list(grid.patched_positions) if target.has_heads and not target.by_position else None,
        "labels": labels, "values": values, "normalized": normalised,
        "baselines": {"clean": base.clean, "corrupted": base.corrupted},
        "top": top, "cells": len(grid.cells), "prompts": int(per_prompt.shape[1]),
    }
    complete = (target.has_heads and not target.by_position and not _grouped(run.cfg, target)
                and len(grid.cells) == run.cfg.n_layers * run.cfg.n_heads)
    if complete:  # a full [layer][head] table: top(ID, n) can rank by it
        data["per_head"] = normalised
    data.update(extra)
    return data, rows


def _row(grid: Grid, cell: Cell, value: float, norm: Optional[float], run) -> Dict[str, Any]:
    target = grid.target
    row: Dict[str, Any] = {"label": cell.label, "layer": cell.layer}
    if target.has_heads:
        row["head"] = cell_head_label(target, run.cfg, cell.layer, cell.head)
    if target.by_position:
        column = grid.columns[cell.grid_index[-1]]
        row["position"] = column.label
        row["slot"] = column.slot
    row["positions"] = " ".join(map(str, cell.positions))
    row["value"] = value
    row["normalized"] = norm
    return row


def cell_key(row: Dict[str, Any]) -> Tuple:
    return (row["layer"], row.get("head"), row["positions"])


def _empty(shape):
    if len(shape) == 1:
        return [None] * shape[0]
    return [_empty(shape[1:]) for _ in range(shape[0])]


def _put(grid, index, value) -> None:
    for i in index[:-1]:
        grid = grid[i]
    grid[index[-1]] = value


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties) of two 1-D tensors."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def _ranks(x):
    import torch

    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(x))
    return (sums / counts)[inverse]


# --------------------------------------------------------------------------- figures


def grid_figures(name: str, data: Dict[str, Any], title: str):
    """A heatmap of the normalised grid: layer x position, layer x head, or (head) x position."""
    from .figures import heatmap

    zmid = 0.0 if data["direction"] == "denoising" else 1.0
    axes = data["axes"]
    y_layers = [f"L{l}" for l in data["layers"]]
    grid = data["normalized"]
    note = f" ({data['direction']}; 0 = corrupted, 1 = clean)"
    if axes == ["layer", "position"]:
        return [(name, heatmap(grid, title + note, "Position", "Layer", _column_labels(data), y_layers, zmid))]
    if axes == ["layer", "head"]:
        return [(name, heatmap(grid, title + note, "Head", "Layer", data["heads"], y_layers, zmid))]
    rows, labels = [], []
    for layer, per_layer in zip(data["layers"], grid):
        for head, values in zip(data["heads"], per_layer):
            if any(v is not None for v in values):
                rows.append(values)
                labels.append(f"L{layer}{head}")
    return [(name, heatmap(rows, title + note, "Position", "Head", _column_labels(data), labels, zmid))]


def _column_labels(data) -> List[str]:
    return [c["label"] for c in data["positions"]]
