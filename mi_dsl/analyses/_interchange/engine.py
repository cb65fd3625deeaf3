"""Interchange forwards: base prompts run with a site's activation taken from the source prompt.

What every forward shares (`Inputs`): the base and source prompts right-padded (each read at its
own final position; runtime/executor.pad_right), the source run's activations at every position
of each hook a site reads (captured once, `capture_all_positions` of activation patching), and,
for prefix reuse, the base run's residual stream entering each site's layer (a site at layer l
cannot change blocks 0..l-1, so the forward resumes at l: runtime/prefix.py).

When every source prompt is also a base prompt (symmetric pairs: each pair's swap is a pair too),
one sweep of the base prompts serves all three: the source activations are its rows of the same
tokens, and its unembedding input at each final position is the unintervened run (`base_final`).
That sweep also keeps the base prompts' keys and values when they have one length, fit
runtime/pass_kv.py's KV_BYTES and the model can continue a forward (runtime/kv.py): an evaluation
forward then runs only the positions from the earliest one its interchanges write (at least
kv.exact_rest of them), after those keys and values; nothing before that position can change, and
the final position's numbers are the whole forward's.

A *segment* of a batch is one site on some examples, optionally through a featurizer W [d, k]
with orthonormal columns: full vector h <- h_source; featurized h <- h + ((h_source - h) W) W^T,
pyvene's low-rank rotated-space interchange. Rows of one batch may hold different sites and
featurizers of one layer (evaluation stacks them), or one site on a minibatch (training, with the
graph kept for W's gradient).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from ...runtime import kv
from ...runtime.executor import at_final, pad_right
from ...runtime.pass_kv import KV_BYTES
from ...runtime.prefix import block_returns_tensor, resume_at
from ...runtime.shared_prefix import continuable
from ...runtime.unembed import UNEMBED_INPUT
from .._patching.base_sweep import rows_in, sweep
from .._patching.engines import capture_all_positions
from .sites import Column, Site, firing_order


class ColumnIndex:
    """A column's (example, base position, source position) entries, flat, sliceable by examples."""

    def __init__(self, column: Column):
        counts = [len(p) for p in column.base]
        self.counts = torch.tensor(counts, dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.counts.cumsum(0)])
        self.base = torch.tensor([p for ps in column.base for p in ps], dtype=torch.long)
        self.source = torch.tensor([p for ps in column.source for p in ps], dtype=torch.long)

    def entries(self, examples: torch.Tensor):
        """(local row, example, base position, source position) of rows holding `examples` in order."""
        counts = self.counts[examples]
        local = torch.repeat_interleave(torch.arange(len(examples)), counts)
        starts = torch.repeat_interleave(self.offsets[examples], counts)
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        flat = starts + torch.arange(int(counts.sum())) - first
        return local, examples[local], self.base[flat], self.source[flat]


@dataclass
class Segment:
    site: Site
    examples: torch.Tensor      # [m] example indices, rows row_start .. row_start + m - 1
    row_start: int
    W: Optional[torch.Tensor] = None   # [d, k] orthonormal columns, or None: the full vector


@dataclass
class Inputs:
    examples: Sequence[Any]
    base: torch.Tensor                  # [n, S] right-padded base prompts
    final: torch.Tensor                 # [n] each base prompt's final position
    source: Dict[str, torch.Tensor]     # hook name -> [n, S', ...] the source run's activations
    resume: Dict[int, torch.Tensor]     # layer -> [n, S, d] base residual entering it (prefix reuse)
    columns: List[ColumnIndex]
    base_final: Optional[torch.Tensor] = None  # [n, d] the unintervened unembedding input, when one sweep ran
    past: Optional[Dict[int, Any]] = None  # every layer's base keys and values [n, kv heads, S, d_head], or None

    def width(self) -> int:
        return int(self.base.shape[1])


def prepare(run, examples, cols: Sequence[Column], sites: Sequence[Site], reuse_prefix: bool = True,
            one_sweep: bool = True) -> Inputs:
    """The shared inputs; with `one_sweep`, where every source prompt is a base prompt, from one sweep
    of the base prompts (the module's docstring)."""
    base, final = pad_right([e.base.ids for e in examples])
    source_tokens, _ = pad_right([e.source.ids for e in examples])
    hooks = sorted({(s.layer, s.component): s.hook for s in sites}.items(), key=lambda kv: firing_order(kv[0]))
    names = list(dict.fromkeys(h for _, h in hooks))
    layers = sorted({s.layer for s in sites if s.layer > 0})
    if reuse_prefix and layers and run.executor.resumable is None:  # one short probe forward per model
        run.executor.resumable = block_returns_tensor(run.model, base)
    resid = [f"blocks.{l}.hook_resid_pre" for l in layers] if reuse_prefix and run.executor.resumable else []
    rows = rows_in(source_tokens, base) if one_sweep else None
    past = None
    if rows is not None:
        keys = (bool((final == base.shape[1] - 1).all()) and kv.size_bytes(run.cfg, *base.shape) <= KV_BYTES
                and continuable(run.executor, base.tolist()) > 0)
        captured, base_final, past = sweep(run, base, list(dict.fromkeys(names + resid)), final, keys)
        source = {name: captured[name][rows] for name in names}
    else:
        source = capture_all_positions(run, "source", names, source_tokens)
        captured = capture_all_positions(run, "base", resid, base) if resid else {}
        base_final = None
    resume = {l: captured[n] for l, n in zip(layers, resid)}
    return Inputs(examples, base, final, source, resume, [ColumnIndex(c) for c in cols], base_final, past)


def forward(run, inputs: Inputs, layer: int, segments: Sequence[Segment], grad: bool = False) -> torch.Tensor:
    """[rows, d_model] the unembedding's input at each row's base final position, with the segments'
    interchanges; the forward starts at `layer` when its residual is cached. With `grad` the result
    keeps the graph back to each segment's W."""
    rows = torch.cat([s.examples for s in segments])
    by_hook: Dict[str, List[Segment]] = {}
    for segment in segments:
        by_hook.setdefault(segment.site.hook, []).append(segment)
    hooks = [(name, _writer(inputs, group, grad)) for name, group in by_hook.items()]
    device = run.device
    resid = inputs.resume.get(layer)
    start = layer if resid is not None else 0
    resid = resid[rows.to(resid.device)] if resid is not None else None
    select = at_final(inputs.final[rows])
    if not grad and inputs.past is not None:  # positions from the earliest one written (module docstring)
        p = kv.continue_from(_earliest(inputs, segments), inputs.width(), int(run.executor.kv_rest or 0))
        if p > 0:
            hooks = [(name, _writer(inputs, group, grad, p)) for name, group in by_hook.items()]
            options = {"position_ids": kv.positions(p, inputs.width(), len(rows), device)}
            with resume_at(run.model, start, None if resid is None else resid[:, p:]), \
                    kv.continuing(run.model, kv.take(inputs.past, rows, p)):
                keep = {UNEMBED_INPUT: at_final(inputs.final[rows] - p)}
                _, kept = run.executor.capture(inputs.base[rows][:, p:], keep, interventions=hooks,
                                               stop_after=UNEMBED_INPUT, forward_kwargs=options)
            return kept[UNEMBED_INPUT]
    with resume_at(run.model, start, resid):
        if not grad:
            _, kept = run.executor.capture(inputs.base[rows], {UNEMBED_INPUT: select}, interventions=hooks,
                                           stop_after=UNEMBED_INPUT)
            return kept[UNEMBED_INPUT]
        seen: Dict[str, torch.Tensor] = {}

        def record(act, hook=None):
            seen["x"] = select(act).to(device)
            return act

        run.executor.capture(inputs.base[rows], {}, interventions=hooks + [(UNEMBED_INPUT, record)],
                             stop_after=UNEMBED_INPUT)
        return seen["x"]


def _earliest(inputs: Inputs, segments: Sequence[Segment]) -> int:
    """The earliest base position any segment writes (the width when none writes any)."""
    found = []
    for segment in segments:
        positions = inputs.columns[segment.site.column].entries(segment.examples)[2]
        if len(positions):
            found.append(int(positions.min()))
    return min(found, default=inputs.width())


def _writer(inputs: Inputs, segments: Sequence[Segment], grad: bool, offset: int = 0):
    """A hook writing each segment's interchange into its rows; `offset`: the forward runs positions offset.."""

    def hook(act, hook=None):
        if grad or act.requires_grad:
            act = act.clone()
        for segment in segments:
            local, examples, base_pos, source_pos = inputs.columns[segment.site.column].entries(segment.examples)
            rows = (local + segment.row_start).to(act.device)
            source = inputs.source[segment.site.hook]
            where = (rows, (base_pos - offset).to(act.device))
            values = source[examples.to(source.device), source_pos.to(source.device)]
            if segment.site.head >= 0:
                where = where + (torch.full_like(rows, segment.site.head),)
                values = values[:, segment.site.head]
            values = values.to(act.device, act.dtype)
            if segment.W is not None:
                current = act[where]
                W = _canonical(segment.W, act)
                values = current + ((values - current) @ W) @ W.T
            act[where] = values
        return act

    return hook


def _canonical(W: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """W in a fresh, row-major, allocator-aligned tensor. The same numbers in another layout (a
    parametrization's transposed view) or at another address (a memory-mapped safetensors file, whose
    offset depends on its header) take other vectorised paths through the matmul and differ in the
    last bits; a trained W and the same W read back from its file must give the same IIA."""
    if W.requires_grad:
        return W.to(like.device, like.dtype).contiguous()  # training: the graph must reach W
    return torch.empty(W.shape, dtype=like.dtype, device=like.device).copy_(W)


def candidate_logits(run, x: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[rows, K] float32 logits of each row's candidates ([rows, K] ids, -1 pads -> -inf), through the
    unembedding's own per-token readout (the logit_diff metric's arithmetic)."""
    rows, k = candidates.shape
    ids = candidates.to(x.device)
    flat = run.unembed.logits_of(x.repeat_interleave(k, 0), ids.clamp(min=0).reshape(-1)).view(rows, k)
    return flat.masked_fill(ids < 0, float("-inf"))


def top_tokens(run, x: torch.Tensor) -> torch.Tensor:
    """[rows] the whole vocabulary's top token at each row (iia_over: vocabulary)."""
    return run.unembed.full(x).float().argmax(-1)
