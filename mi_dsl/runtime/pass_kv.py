"""A shared pass's keys and values, kept so that a rerun of its prompts with a late intervention
runs only the positions from the intervention on.

Ablation at the final position reruns the clean prompts with a head knocked out there. In a
causal model nothing before the ablated position changes, so that rerun needs only the positions
from it on, continuing after the clean run's keys and values of the positions before
(runtime/kv.py). The shared final-position pass runs exactly those clean prompts anyway; when
its plan says a member continues it (`Pass.keys_values`, compile/fusion.py) it keeps every
layer's keys and values, within KV_BYTES. The rerun starts at each batch's earliest intervened
position, but runs at least `kv.exact_rest` positions ending at each prompt's final one, so its
numbers are a full forward's (exact_rest's contract).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from . import kv

KV_BYTES = 256 * 2 ** 20  # keys and values of a pass kept at once (float32)


def fits(cfg, prompts: Sequence[Sequence[int]]) -> bool:
    """Do every layer's keys and values of `prompts` (padded to the longest) fit in KV_BYTES?"""
    size = kv.size_bytes(cfg, len(prompts), max((len(p) for p in prompts), default=0))
    return 0 < size <= KV_BYTES


class Recorder:
    """Each batch's keys and values with the prompts it ran (indices into the pass's prompts)."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.batches: List[Tuple[List[int], kv.KV]] = []

    def done(self, rows: Sequence[int], store: kv.KV) -> None:
        """A batch that finished (one that ran out of memory is never kept)."""
        if len(store) == self.n_layers:
            self.batches.append((list(rows), store))

    def stacked(self, n_prompts: int) -> Optional[kv.KV]:
        """layer -> (keys, values) [prompts, kv heads, longest, d_head] in the prompts' order (a prompt
        shorter than the longest has zeros after its end: never read), or None if a batch was missed."""
        if sum(len(rows) for rows, _ in self.batches) != n_prompts:
            return None
        longest = max(store[0][0].shape[2] for _, store in self.batches)
        out: kv.KV = {}
        for layer in range(self.n_layers):
            k0, v0 = self.batches[0][1][layer]
            keys = k0.new_zeros((n_prompts, k0.shape[1], longest, k0.shape[3]))
            values = v0.new_zeros((n_prompts, v0.shape[1], longest, v0.shape[3]))
            for rows, store in self.batches:
                k, v = store[layer]
                index = torch.as_tensor(rows, device=k.device)
                keys[index, :, :k.shape[2]] = k
                values[index, :, :v.shape[2]] = v
            out[layer] = (keys, values)
        return out


def start(first: Sequence[int], final: Sequence[int], rest: int) -> int:
    """Where a batch's rerun starts: the earliest of its prompts' kv.continue_from (each prompt's
    earliest intervened position, at least `rest` positions before its final one)."""
    return min(kv.continue_from(int(f), int(last) + 1, rest) for f, last in zip(first, final))
