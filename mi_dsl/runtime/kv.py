"""Reuse the keys and values of positions before p: run only positions p.. of a forward.

In a causal model nothing at positions >= p changes what positions < p compute. So when a
forward's first p tokens (and everything done at them) equal an earlier run's, the forward
can run on tokens[p:] alone, given the earlier run's keys and values of the first p positions
at every layer:

- `recording(model, store)`: a forward leaves each layer's keys and values (after rotary
  embedding, before grouped-query expansion: [batch, kv heads, positions, d_head]) in `store`;
- `continuing(model, past)`: each layer's attention prepends `past[layer]` to the keys and
  values it computes, and masks with the rectangular causal mask of queries p.. over keys
  0.. (a sliding window included). The caller passes `position_ids` p.. to the forward,
  so rotary embeddings see the true positions.

Both act through the seam TransformerBridge's attention offers for a KV cache
(`_update_kv_cache`, `_apply_reconstruct_attention_mask`), set on each attention instance's
own `__dict__` for the duration and put back afterwards (runtime/overrides.py, as for
blocks in runtime/prefix.py). transformers' own cache cannot be used: Gemma-3's layers pass it as `cache=`,
which the bridge's attention does not read. `exact_rest(model, tokens)` finds, once per
model, how many positions a continued forward must run to give the full forward's numbers
bit for bit (0: it cannot continue; callers then run every position, as before).

Users: the pipeline's metrics (prompts sharing a prefix run it once, runtime/pipeline.py),
exact patching (positions before the earliest patched one, analyses/_patching/engines.py) and
circuit-ablated forwards under patching ablation (positions before the first token where the
clean and corrupted prompts differ, analyses/_circuit/faithfulness.py).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..errors import RunError
from .overrides import overriding

KV = Dict[int, Tuple[torch.Tensor, torch.Tensor]]   # layer -> (keys, values) [B, kv heads, p, d_head]


def attentions(model) -> List:
    """Each block's attention module, when every one has the KV seam; else []."""
    blocks = getattr(model, "blocks", None) or []
    found = [getattr(block, "attn", None) for block in blocks]
    if not found or any(a is None or not hasattr(a, "_update_kv_cache")
                        or not hasattr(a, "_apply_reconstruct_attention_mask") for a in found):
        return []
    return found


@contextmanager
def recording(model, store: KV) -> Iterator[None]:
    """Forwards inside the block leave each layer's keys and values in `store` (inside `continuing`:
    those of every position, the past's included)."""
    def make(layer, module):
        seam = module.__dict__.get("_update_kv_cache")  # continuing's, when it is on
        original = seam if seam is not None else functools.partial(type(module)._update_kv_cache, module)

        def update(k, v, **kwargs):
            k, v = original(k, v, **kwargs)
            store[layer] = (k.detach(), v.detach())
            return k, v
        return update

    with overriding(attentions(model), "_update_kv_cache", make):
        yield


@contextmanager
def continuing(model, past: KV) -> Iterator[None]:
    """Forwards inside the block continue after `past`'s positions (pass position_ids p..)."""
    modules = attentions(model)

    def prepend(layer, module):
        original = type(module)._update_kv_cache

        def update(k, v, **kwargs):
            k, v = original(module, k, v, **kwargs)
            if layer not in past:  # a block resumed past (runtime/prefix.py) never calls this
                return k, v
            pk, pv = past[layer]
            return torch.cat([pk.to(k.device, k.dtype), k], dim=-2), torch.cat([pv.to(v.device, v.dtype), v], dim=-2)
        return update

    def mask(layer, module):
        window = _sliding_window(module)

        def apply(attn_scores, attention_mask=None, seq_len=None, q_seq_len=None):
            q_len, kv_len = attn_scores.shape[-2], attn_scores.shape[-1]
            query = torch.arange(kv_len - q_len, kv_len, device=attn_scores.device)[:, None]
            key = torch.arange(kv_len, device=attn_scores.device)[None, :]
            allowed = key <= query
            if window is not None:
                allowed = allowed & (query - key < window)
            fill = -torch.inf if getattr(module, "compatibility_mode", False) else torch.finfo(attn_scores.dtype).min
            return attn_scores.masked_fill(~allowed, fill)
        return apply

    with (overriding(modules, "_update_kv_cache", prepend),
          overriding(modules, "_apply_reconstruct_attention_mask", mask)):
        yield


def _sliding_window(module) -> Optional[int]:
    hf = getattr(module, "original_component", None)
    window = getattr(hf, "sliding_window", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def positions(start: int, stop: int, rows: int, device) -> torch.Tensor:
    """position_ids [rows, stop - start] for a forward of positions start..stop-1."""
    return torch.arange(start, stop, device=device)[None].expand(rows, -1)


def joined(stores: Sequence[KV], n_layers: int) -> Optional[KV]:
    """The keys and values of consecutive batches (each one `recording`'s store), joined along the rows;
    None when some batch's forward missed a layer."""
    if not stores or any(len(store) != n_layers for store in stores):
        return None
    return {layer: (torch.cat([store[layer][0] for store in stores]), torch.cat([store[layer][1] for store in stores]))
            for layer in range(n_layers)}


def take(kv: KV, rows: torch.Tensor, p: int) -> KV:
    """The first p positions of `rows` of every layer's keys and values."""
    return {layer: (k[rows.to(k.device), :, :p], v[rows.to(v.device), :, :p]) for layer, (k, v) in kv.items()}


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    """The first position at which some row of `a` [N, S] differs from the same row of `b` (S when
    none does): before it both runs compute the same numbers, so one run's keys and values serve
    the other."""
    differs = (a != b).any(0)
    return int(differs.float().argmax()) if bool(differs.any()) else int(a.shape[1])


def continue_from(first: int, length: int, rest: int) -> int:
    """Where a forward of `length` positions, nothing before `first` of which can change, may start:
    at `first`, but early enough to run at least `rest` positions (exact_rest: then its numbers are
    the full forward's); 0 (every position) when rest is 0, a model that cannot continue."""
    return max(0, min(first, length - rest)) if rest > 0 else 0


def size_bytes(cfg, rows: int, positions: int) -> int:
    """float32 bytes of every layer's keys and values of `rows` prompts over `positions` positions."""
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return rows * cfg.n_layers * 2 * kv_heads * positions * cfg.d_head * 4


def exact_rest(model, tokens: torch.Tensor) -> int:
    """The fewest positions a continued forward must run for its final unembedding input (the
    residual every metric reads) to equal the full forward's bit for bit on this device's kernels
    (0: forwards cannot be continued here).

    Matrix kernels may sum in another order when a product has very few rows (here, Gemma's
    attention scores with 1-3 query rows differed in the last bits), so callers start a
    continued forward early enough to run at least this many positions: their numbers are then
    exactly a full forward's. Where no length is exact (a GPU's kernels), a continuation within
    1e-4 of the full forward still counts, with 1 position. Each probe stops at the unembedding's
    input: logits over a large vocabulary (Gemma's 262,144 tokens) cost more than the forward."""
    if not attentions(model) or tokens.shape[1] < 3:
        return 0
    row = tokens[:2].to(next(model.parameters()).device)
    n = row.shape[1]
    store: KV = {}
    with torch.no_grad():
        with recording(model, store):
            full = final_input(model, row)
        if len(store) != len(model.blocks):
            return 0

        def continued(rest: int) -> torch.Tensor:
            with continuing(model, take(store, torch.arange(row.shape[0]), n - rest)):
                return final_input(model, row[:, n - rest:], position_ids=positions(n - rest, n, row.shape[0],
                                                                                    row.device))

        half = continued(n - n // 2)
        if not bool((half - full).abs().max() <= 1e-4 * (float(full.abs().max()) + 1e-6)):
            return 0  # an attention that ignores the seam
        fewest = None
        for rest in sorted({r for r in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if r < n} | {n - 1}, reverse=True):
            if not torch.equal(continued(rest), full):
                break
            fewest = rest
    return fewest if fewest is not None else 1


class _Reached(Exception):
    """Raised at the unembedding's input: the probe has what it compares."""


def final_input(model, tokens: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """[B, d_model] the unembedding's input at the final position of one forward of `tokens`; the
    forward stops there (no logits)."""
    from .unembed import UNEMBED_INPUT

    found: List[torch.Tensor] = []

    def keep(act, hook=None):
        found.append(act[:, -1].detach())
        raise _Reached()

    try:
        with model.hooks(fwd_hooks=[(UNEMBED_INPUT, keep)]):
            model(tokens, prepend_bos=False, **forward_kwargs)
    except _Reached:
        pass
    if not found:
        raise RunError(f"the forward never reached {UNEMBED_INPUT}; this architecture may not have it")
    return found[0]
