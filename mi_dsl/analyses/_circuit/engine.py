"""Hooked passes over the graph: capture node outputs, run circuit-ablated forwards, read gradients at node inputs.

Where a node's output is read and its input is changed (TransformerBridge hook names):
  input       output  blocks.0.hook_resid_pre (embeddings, scaled and with positions)
  head l.h    output  z_h @ W_O[l, h], times the post-attention norm's weight / scale of
                      this run where the model has one (Gemma): the head's share of what
                      the layer writes; the rest of attn_out must be a constant bias,
                      which every pass checks
  MLP l       output  blocks.l.hook_mlp_out (after a post-MLP norm)
  q/k/v l     input   blocks.l.attn.hook_{q,k,v}_input (use_split_qkv_input: the
                      residual before ln1, one copy per query head or key/value head)
  MLP l       input   blocks.l.ln2.hook_in
  logits      input   ln_final.hook_in
The metric is computed at unembed.hook_in (final position) and the forward stops there.

A circuit-ablated forward adds, at each input v, sum over its parents u of
(1 - kept[u, v]) * (off_u - current_u): the edges not kept carry u's "off" output
(the corrupted run's, a mean, or zero) while kept edges carry this run's own output.
With one complement for the whole batch, each input reads only the parents whose edges
change it: the ablated ones, or (when fewer edges are kept than ablated) the running sum
over all parents minus the kept ones, so a forward's ablation costs what its circuit's
sparser side costs rather than every parent of every input (sparse.py `Sparse`).

A forward may run positions `start`.. only (`Pass.start`, `Pass.past`): it continues after the
keys and values of positions < start (runtime/kv.py), with position_ids start.., and every
[B, S, ...] tensor of its pass (off, outputs, the metric's input) covers positions start.. only.
faithfulness.py uses it where positions before `start` compute what the clean run computes.

`GraphModel.capture`: a plain forward's node and attention outputs (and keys and values), kept for a
whole prompt set, so the corrupted prompts run once per analysis. Given its attention outputs
(`Pass.off_attn`), a circuit-ablated forward skips layers that keep no edge (skipping.py).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, TypeVar, Union

import torch

from ...errors import RunError
from ...runtime import kv
from .graph import Graph
from .plain import remember
from .skipping import from_capture, skippable, writers_of
from .sparse import Sparse, Stacked, sparse_of

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_final [B, d], rows [B]) -> [B]
T = TypeVar("T")
STOP_AT = "unembed.hook_in"
LETTERS = ("q", "k", "v")


class _Stop(Exception):
    """Raised at the metric's hook: nothing after it is needed."""


@dataclass
class Pass:
    """What one forward does. All tensors are per batch row unless noted."""

    rows: torch.Tensor                          # [B] dataset indices of the batch's prompts (for the metric)
    capture_outputs: bool = True                # keep current node outputs in `outputs`
    capture_inputs: bool = False                # keep node inputs in `inputs`
    off: Optional[torch.Tensor] = None          # [B, S, F, d] outputs ablated edges carry
    complement: Optional[torch.Tensor] = None   # [F, Bw] or [B, F, Bw]: 1 where an edge is ablated
    complements: Optional[List[torch.Tensor]] = None  # [F, Bw] each: circuits stacked (sparse.py Stacked)
    embed: Optional[torch.Tensor] = None        # [B, S, d] replaces the input node's output (EAP-IG inputs)
    pin_inputs: Optional[torch.Tensor] = None   # [B, S, Bw, d] values of inputs, gradient passed through
    on_grad: Optional[Callable[[int, int, torch.Tensor], None]] = None  # (start, stop, grad [B,S,n,d])
    ablated_dims: Optional[torch.Tensor] = None  # [d, F]: 1 where a node's output dimension is ablated (neurons)
    replace: Optional[Dict[str, torch.Tensor]] = None  # hook name -> value it takes, the gradient cut there
    capture_z: bool = False                     # keep each layer's attention z in `z`
    start: int = 0                              # run positions start.. only, after `past`'s keys and values
    off_attn: Optional[torch.Tensor] = None     # [B, S, L, d] attention outputs of the run `off` is: skipping.py
    capture_attn_out: bool = False              # keep each layer's attention output in `attn_out`
    attn_out: Optional[torch.Tensor] = None
    past: Optional[kv.KV] = None                # every layer's keys and values of (at least) positions < start
    keys: Optional[kv.KV] = None                # filled with every layer's keys and values (kv.recording)
    z: Dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: Optional[torch.Tensor] = None
    inputs: Optional[torch.Tensor] = None
    delta: Optional[torch.Tensor] = None        # [B, S, d, F] off - current, filled as the forward runs
    metric: Optional[torch.Tensor] = None
    _z: Dict[int, torch.Tensor] = field(default_factory=dict)
    _scale: Dict[int, torch.Tensor] = field(default_factory=dict)
    _sparse: Optional[Union[Sparse, Stacked]] = None
    _split: List[tuple] = field(default_factory=list)  # (layer, spread, bound) a pass judges at its end


@dataclass
class Capture:
    """A plain forward of `tokens` [B, S]: every node's output and every layer's keys and values."""
    tokens: torch.Tensor        # [B, S] on the CPU
    split: bool                 # taken with the split q/k/v inputs on (the mode the keys were computed in)
    outputs: torch.Tensor       # [B, S, F, d]
    past: Optional[kv.KV]       # layer -> (keys, values) [B, kv heads, S, d_head], when recorded
    attn_out: torch.Tensor      # [B, S, L, d] what each layer's attention wrote (hook_attn_out)


class GraphModel:
    """A bridge seen as the graph's nodes and edges."""

    def __init__(self, bridge, graph: Graph, metric: Metric):
        self.bridge = bridge
        self.graph = graph
        self.metric = metric
        self.W_O = bridge.W_O.detach()                      # [L, H, d_head, d_model]
        self.post_norm = hasattr(bridge.blocks[0], "ln1_post")
        self.post_weight = [self._post_weight(layer) for layer in range(graph.n_layers)] \
            if self.post_norm else None
        self.n_upstream = graph.n_upstream()
        self.d_model = bridge.cfg.d_model
        self.forwards = 0
        self.backwards = 0
        self.tokens_run = 0          # rows x positions the forwards ran
        self.tokens_skipped = 0      # rows x positions continued forwards did not run (Pass.start)
        self.captures_reused = 0     # captures answered from `kept`
        self.kv_rest: Optional[int] = None  # kv.exact_rest: positions a continued forward must run (0: cannot)
        self.kept: Optional[Capture] = None  # the last capture of a whole prompt set (`capture`)
        self.on_split: Callable[[str], None] = lambda message: None  # told when a batch is split (a warning)
        self.skip_layers, self.layers_skipped = True, 0  # skipping.py; attention and MLP layers not computed
        self.stack_rows = 0  # rows a pass of stacked circuits may hold (faithfulness.py; 0: one circuit a pass)
        self._writers = writers_of(bridge)

    def _post_weight(self, layer: int) -> torch.Tensor:
        norm = self.bridge.blocks[layer].ln1_post
        w = next(iter(dict(norm.named_parameters()).values())).detach()
        return (1.0 + w) if getattr(self.bridge.cfg, "rmsnorm_uses_offset", False) else w

    # ------------------------------------------------------------------ one forward

    @contextmanager
    def split_inputs(self) -> Iterator[None]:
        """The bridge's per-head q/k/v inputs, on for the duration; parameters frozen."""
        bridge = self.bridge
        was = bool(getattr(bridge.cfg, "use_split_qkv_input", False))
        grads = [(p, p.requires_grad) for p in bridge.parameters()]
        try:
            bridge.set_use_split_qkv_input(True)
        except Exception as err:  # an attention implementation without the fork
            raise RunError(f"this model's attention cannot take separate q/k/v inputs "
                           f"({str(err).splitlines()[0]}); edge-level circuits need them") from None
        for p, _ in grads:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in grads:
                p.requires_grad_(flag)
            bridge.set_use_split_qkv_input(was)

    @property
    def splitting(self) -> bool:
        return bool(getattr(self.bridge.cfg, "use_split_qkv_input", False))

    def capture(self, tokens: torch.Tensor, rows: torch.Tensor, keep: bool = False, keys: bool = False) -> Capture:
        """A plain forward of `tokens` (no gradient): node outputs, and every layer's keys and values
        when `keys` or `keep`.

        `keep`: `tokens` are a whole prompt set, so the capture is kept for the analysis's later passes
        over the same tokens (in the same q/k/v mode), which it then answers without a forward. Only a
        whole set's: it is the [B, S, F, d] tensor each pass of that one batch holds anyway, so keeping
        it between passes does not raise a pass's peak memory; with several batches, keeping every
        batch's would add one such tensor a batch to each pass, which the batch rule (sizes.py
        bytes_per_row) does not count, so each pass captures its own, as before."""
        kept = self.kept
        if kept is not None and kept.split == self.splitting and kept.tokens.shape == tokens.shape \
                and torch.equal(kept.tokens, tokens.cpu()):
            self.captures_reused += 1
            return kept
        past: Optional[kv.KV] = {} if keep or keys else None
        with torch.no_grad():
            job = self.run(tokens, Pass(rows, keys=past, capture_attn_out=True))
        found = Capture(tokens.cpu().clone(), self.splitting, job.outputs, past, job.attn_out)
        if keep:
            self.kept = found
        return found

    def forget(self) -> None:  # a batch split after running out of memory; the analysis is done with it
        self.kept = None

    def can_continue(self, tokens: torch.Tensor) -> int:
        """kv.exact_rest of the bridge, found once (0: forwards cannot be continued)."""
        if self.kv_rest is None:
            self.kv_rest = kv.exact_rest(self.bridge, tokens) if tokens.shape[1] >= 3 else 0
        return self.kv_rest

    def run(self, tokens: torch.Tensor, job: Pass, grad: bool = False) -> Pass:
        """One forward of `tokens` [B, S] doing what `job` says (call inside split_inputs); positions
        job.start.. only when it is set."""
        p = job.start
        if p:
            tokens = tokens[:, p:]
        B, S = tokens.shape
        F, Bw = self.graph.n_forward, self.graph.n_backward
        dev, dtype = self.W_O.device, self.W_O.dtype
        if job.capture_outputs:
            job.outputs = torch.zeros(B, S, F, self.d_model, device=dev, dtype=dtype)
        job._sparse = sparse_of(job)
        if job._sparse is None and job.off is not None:  # nodes last: each input's ablation is one product
            job.delta = job.off.transpose(2, 3).contiguous()
        if job.capture_inputs:
            job.inputs = torch.zeros(B, S, Bw, self.d_model, device=dev, dtype=dtype)
        if job.capture_attn_out:
            job.attn_out = torch.zeros(B, S, self.graph.n_layers, self.d_model, device=dev, dtype=dtype)
        attention, mlps = skippable(self, job, grad)
        hooks = self._hooks(job, grad, set(attention), set(mlps))
        self.forwards += 1
        self.tokens_run += B * S
        self.tokens_skipped += B * p
        self.layers_skipped += (len(attention) + len(mlps)) * len(job.complements or [job.complement])  # per circuit
        extra = {"position_ids": kv.positions(p, p + S, B, dev)} if p else {}
        with torch.set_grad_enabled(grad):
            try:
                with self.bridge.hooks(fwd_hooks=hooks), self._keys_and_values(job, B), \
                        from_capture(self, job, attention, mlps) as ran:
                    self.bridge(tokens.to(dev), prepend_bos=False, **extra)
            except _Stop:
                pass
        if len(ran) != len(attention) + len(mlps):  # a block that calls its attention or MLP another way
            raise RunError(f"a circuit-ablated forward skipped {len(ran)} of {len(attention) + len(mlps)} layers")
        self._raise_unsplit(job)
        if job.metric is None:
            raise RunError(f"the forward never reached {STOP_AT}")
        remember(self, tokens, job)  # a plain forward's metric answers the full circuit (plain.py)
        return job

    def _keys_and_values(self, job: Pass, rows: int):
        if job.start and job.past is None:
            raise RunError("a forward from a later position needs the keys and values before it")
        if job.start:
            return kv.continuing(self.bridge, kv.take(job.past, torch.arange(rows), job.start))
        return kv.recording(self.bridge, job.keys) if job.keys is not None else nullcontext()

    def _hooks(self, job: Pass, grad: bool, skip_attention=frozenset(), skip_mlps=frozenset()) -> List:
        """The pass's hooks; layers it skips (skipping.py) have none: they write the capture's values."""
        g = self.graph
        # replacements first: the hooks after them on the same point see the replaced value
        hooks = [(name, self._replace(value)) for name, value in (job.replace or {}).items()]
        hooks.append(("blocks.0.hook_resid_pre", self._input_node(job, grad)))
        for layer in range(g.n_layers):
            if layer not in skip_attention:
                for letter in LETTERS:
                    hooks.append((f"blocks.{layer}.attn.hook_{letter}_input",
                                  self._input_hook(job, g.input_slice(layer, letter), g.n_upstream_of(layer, letter))))
                hooks.append((f"blocks.{layer}.attn.hook_z", self._keep_z(job, layer)))
                if self.post_norm:
                    hooks.append((f"blocks.{layer}.ln1_post.hook_scale", self._keep_scale(job, layer)))
                hooks.append((f"blocks.{layer}.hook_attn_out", self._heads_out(job, layer)))
            if layer not in skip_mlps:
                hooks.append((f"blocks.{layer}.ln2.hook_in",
                              self._input_hook(job, g.input_slice(layer, "m"), g.n_upstream_of(layer, "m"))))
                hooks.append((f"blocks.{layer}.hook_mlp_out", self._output_hook(job, g.mlp_index(layer))))
        logits = slice(g.logits_index, g.logits_index + 1)
        hooks.append(("ln_final.hook_in", self._input_hook(job, logits, g.n_forward)))
        hooks.append((STOP_AT, self._metric_hook(job)))
        return hooks

    # ------------------------------------------------------------------ outputs

    def _record(self, job: Pass, index: slice, value: torch.Tensor) -> None:
        """value [B, S, n, d]: current outputs of forward nodes `index`."""
        value = value.detach()
        if job.outputs is not None:
            job.outputs[:, :, index] = value
        if job.delta is not None:
            job.delta[..., index] -= value.transpose(2, 3)
        if job._sparse is not None:
            job._sparse.recorded(index, value)

    def _input_node(self, job: Pass, grad: bool):
        def hook(act, hook=None):
            if job.embed is not None:
                act = job.embed.to(act.dtype)
            if grad and not act.requires_grad:  # parameters are frozen: start the graph here
                act = act.detach().requires_grad_(True)
            self._record(job, slice(0, 1), act[:, :, None])
            return act
        return hook

    def _output_hook(self, job: Pass, index: int):
        def hook(act, hook=None):
            self._record(job, slice(index, index + 1), act[:, :, None])
            return act
        return hook

    def _keep_z(self, job: Pass, layer: int):
        def hook(act, hook=None):
            job._z[layer] = act
            if job.capture_z:
                job.z[layer] = act.detach().clone()
            return act
        return hook

    @staticmethod
    def _replace(value: torch.Tensor):
        def hook(act, hook=None):
            return value.to(act.dtype)  # a constant: no gradient flows past this point
        return hook

    def _keep_scale(self, job: Pass, layer: int):
        def hook(act, hook=None):
            job._scale[layer] = act
            return act
        return hook

    def _heads_out(self, job: Pass, layer: int):
        g = self.graph

        def hook(act, hook=None):
            heads = self.head_outputs(job._z.pop(layer), layer, job._scale.pop(layer, None))
            self._check_split(job, act, heads, layer)
            if job.attn_out is not None:
                job.attn_out[:, :, layer] = act.detach()
            start = g.head_index(layer, 0)
            self._record(job, slice(start, start + g.n_heads), heads)
            return act
        return hook

    def head_outputs(self, z: torch.Tensor, layer: int, scale: Optional[torch.Tensor]) -> torch.Tensor:
        """z [B, S, H, d_head] -> each head's write into the residual stream [B, S, H, d_model]."""
        out = torch.einsum("bshd,hdm->bshm", z.to(self.W_O.dtype), self.W_O[layer])
        if self.post_norm:
            out = out * self.post_weight[layer] / scale[:, :, None, :]
        return out

    def _check_split(self, job: Pass, attn_out: torch.Tensor, heads: torch.Tensor, layer: int) -> None:
        """What the heads do not explain must be one bias vector, or edges would not add up. Judged once
        the pass is done (_raise_unsplit): comparing here read the GPU once a layer, and each such read
        waits for every queued kernel."""
        with torch.no_grad():
            rest = attn_out.detach() - heads.detach().sum(2)
            spread = (rest - rest[:1, :1]).abs().max()
            tolerance = 1e-4 if attn_out.dtype in (torch.float32, torch.float64) else 3e-2  # half precision
            job._split.append((layer, spread, tolerance * (1.0 + attn_out.detach().abs().max())))

    @staticmethod
    def _raise_unsplit(job: Pass) -> None:
        if not job._split:
            return
        layers, spreads, bounds = zip(*job._split)
        job._split = []
        over = torch.stack(spreads) > torch.stack(bounds)
        if bool(over.any()):
            first = int(over.nonzero()[0, 0])
            raise RunError(f"layer {layers[first]}'s attention output does not split into its heads' outputs "
                           f"(residual spread {float(spreads[first]):.3g}); this architecture is not supported "
                           "by edge-level circuits")

    # ------------------------------------------------------------------ inputs

    def _input_hook(self, job: Pass, index: slice, n_up: int):
        def hook(act, hook=None):
            squeeze = act.dim() == 3
            x = act[:, :, None] if squeeze else act                       # [B, S, n, d]
            if job._sparse is not None:
                x = x + job._sparse.ablation(index, n_up).to(x.dtype)
            elif job.delta is not None and job.complement is not None:
                x = x + self._ablation(job, index, n_up).to(x.dtype)
            if job.pin_inputs is not None:
                x = x + (job.pin_inputs[:, :, index].to(x.dtype) - x).detach()
            if job.capture_inputs:
                job.inputs[:, :, index] = x.detach()
            if job.on_grad is not None and x.requires_grad:
                x.register_hook(lambda grad, i=index: job.on_grad(i.start, i.stop, grad))
            return x[:, :, 0] if squeeze else x
        return hook

    def _ablation(self, job: Pass, index: slice, n_up: int) -> torch.Tensor:
        """[B, S, n, d]: what the ablated edges into inputs `index` change, sum over upstream f of
        delta[b, s, :, f] * complement[f, n] (per row when complement is [B, F, Bw])."""
        delta = job.delta[..., :n_up]                                   # [B, S, d, n_up]
        if job.ablated_dims is not None:                                # neurons: only ablated dimensions move
            delta = delta * job.ablated_dims[:, :n_up]
        if job.complement.dim() == 2:
            return (delta @ job.complement[:n_up, index]).transpose(2, 3)
        return (delta @ job.complement[:, None, :n_up, index]).transpose(2, 3)

    def _metric_hook(self, job: Pass):
        def hook(act, hook=None):
            job.metric = self.metric(act[:, -1], job.rows)
            raise _Stop()
        return hook


def over_batches(model: GraphModel, n: int, size: int, work: Callable[[slice], T], what: str) -> List[T]:
    """work(part) for consecutive parts covering n rows, halved where a part runs out of memory
    (runtime/executor.py's in_batches: a GPU's default batch is sized by an estimate, _circuit/sizes.py);
    `work` must change nothing outside itself before it returns, so a failed part leaves no trace."""
    from ...runtime.executor import in_batches

    def split(rows: int, smaller: int) -> None:
        model.forget()  # a whole set's capture: the smaller batches hold their own
        model.on_split(f"out of memory with {rows} pairs a batch while {what}; retrying with {smaller}")
        if model.W_O.device.type == "cuda":
            torch.cuda.empty_cache()
    return in_batches(n, size, work, on_split=split, one_row_fails=lambda: RunError(
        f"out of memory on a single prompt pair while {what}",
        hint="use a smaller model, fewer tokens, or a device with more memory"))
