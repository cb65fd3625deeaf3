"""The run's attention-pattern cache: every head's pattern of a prompt, captured once per run.

Several analyses read the clean prompts' attention patterns (an attention view, its prompt
browser, attention vs contribution). The first capture of a prompt keeps every head of every
layer, so the later ones run no forward. A shared final-position pass whose plan says so
(`Pass.patterns`, compile/fusion.py) fills the cache during its own sweep: the patterns come
with the forward it runs anyway. Kept only while every prompt's patterns fit in CACHE_BYTES
(float32); past it each analysis captures its own (analyses/_attention.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:  # torch-free at import: the attention analyses' compile reads PATTERN_HOOK
    import torch

PATTERN_HOOK = "blocks.{}.attn.hook_pattern"
CACHE_BYTES = 256 * 2 ** 20
CACHE_KEY = ("attention patterns",)

Cache = Dict[tuple, List[Any]]  # prompt ids -> per layer [head, query, key] float32 tensors on the CPU


def pattern_cache(shared: Optional[dict]) -> Optional[Cache]:
    """The run's cache in its shared store (None: this context keeps none)."""
    return None if shared is None else shared.setdefault(CACHE_KEY, {})


def missing_within_budget(cache: Cache, prompts: Sequence[Sequence[int]], n_layers: int,
                          n_heads: int) -> Optional[List[tuple]]:
    """The prompts not yet in the cache, in order and without repeats, or None when adding them
    would pass the budget."""
    missing = list(dict.fromkeys(tuple(ids) for ids in prompts if tuple(ids) not in cache))

    def size(ids) -> int:  # float32 bytes of one prompt's patterns, every head of every layer
        return 4 * n_layers * n_heads * len(ids) ** 2

    if sum(map(size, cache)) + sum(map(size, missing)) > CACHE_BYTES:
        return None
    return missing


def keep(cache: Cache, ids: Sequence[int], per_layer: Sequence["torch.Tensor"]) -> None:
    """One prompt's patterns ([head, query, key] per layer, possibly right-padded: cut to its length)."""
    n = len(ids)
    cache[tuple(ids)] = [p[:, :n, :n].float().cpu() for p in per_layer]


def with_rows_before(before: "torch.Tensor", late: "torch.Tensor", p: int) -> "torch.Tensor":
    """[B, head, S, S]: query rows 0..p-1 from `before` [B, head, >= p, >= p] (the patterns of a forward of the
    same first p tokens: a causal row reads no later key, so its keys from p on are zero), the rows from p
    on `late` [B, head, S - p, S] (a forward continued at p)."""
    import torch

    first = late.new_zeros(late.shape[0], late.shape[1], p, late.shape[3])
    first[:, :, :, :p] = before[:, :, :p, :p].to(late.device, late.dtype)
    return torch.cat([first, late], dim=2)
