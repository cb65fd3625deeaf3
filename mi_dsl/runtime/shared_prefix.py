"""Prompts that share their first tokens run them once (the pipeline's metric forwards).

A spec's prompts come from one template, so many begin alike: every syllogism "All birds
are endothermic. {noun} are birds. Therefore, {noun} are" shares its first 7 of 15 tokens
with the 29 other nouns. `SharedPrefix.plan` picks the prefix length p that saves the most
token-work, runs one whole prompt of each distinct prefix (its final residual is kept, and
its keys and values of the first p positions: runtime/kv.py), and every other prompt then
runs only its tokens from p on, continuing after its prefix's keys and values.

The numbers are the full forward's, bit for bit on this machine's CPU kernels
(tests/runtime/test_kv_reuse.py, and the shipped specs' golden numbers): the keys and
values come from a forward of the whole prompt length, so every matrix product has the shape
it has in a full forward except the number of query rows, which the kernels do not reorder
sums over. (Keys and values from a forward of the prefix alone gave differences of 2e-5 in a
logit difference: the attention products had fewer key columns.)

Used only for forwards without interventions that read the final position (the pipeline's
keep-condition and the final pairs' metrics).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import kv

MIN_SAVING = 0.15       # below this share of token-work saved, run prompts whole
MAX_KV_BYTES = 256 << 20  # the prefixes' keys and values kept at once


@dataclass
class SharedPrefix:
    length: int                 # p: tokens every prompt's prefix has
    group: torch.Tensor         # [prompts] index of each prompt's prefix
    past: kv.KV                 # layer -> (keys, values) [prefixes, kv heads, p, d_head]
    done: Dict[int, torch.Tensor]  # prompt index -> final residual, for the prompts run whole

    @classmethod
    def plan(cls, executor, prompts: Sequence[Sequence[int]], what: str = "") -> Optional["SharedPrefix"]:
        """The best shared prefix of `prompts`, one whole prompt of each prefix run (its keys and
        values kept), or None when sharing does not pay or the model cannot continue a forward."""
        rest = continuable(executor, prompts)
        length = best_length(prompts, rest) if rest else 0
        if length == 0:
            return None
        prefixes: Dict[Tuple[int, ...], int] = {}
        group = torch.tensor([prefixes.setdefault(tuple(p[:length]), len(prefixes)) for p in prompts])
        cfg = executor.cfg
        if kv.size_bytes(cfg, len(prefixes), length) > MAX_KV_BYTES:
            return None
        first = [int((group == g).nonzero()[0]) for g in range(len(prefixes))]  # one whole prompt per prefix
        whole = whole_prompts(executor, [prompts[i] for i in first], length, what)
        if whole is None:
            return None
        past, finals = whole
        return cls(length, group, past, {i: finals[j] for j, i in enumerate(first)})

    def final_inputs(self, executor, indices: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, d_model] the unembedding's input at each prompt's final position (`indices` into the
        prompts the plan was made for): kept for the prompts run whole, else from a forward of the
        tokens after the prefix."""
        from .executor import at_final, pad_right
        from .unembed import UNEMBED_INPUT

        p = self.length
        indices = list(indices)
        rest = [i for i in indices if i not in self.done]
        found = {i: self.done[i] for i in indices if i in self.done}
        if rest:
            tokens, final = pad_right([list(prompts[i])[p:] for i in rest])
            rows = torch.as_tensor(rest)
            select = at_final(None if bool((final == tokens.shape[1] - 1).all()) else final)
            with kv.continuing(executor.model, kv.take(self.past, self.group[rows], p)):
                _, kept = executor.capture(tokens, {UNEMBED_INPUT: select}, stop_after=UNEMBED_INPUT,
                                           forward_kwargs={"position_ids": kv.positions(p, p + tokens.shape[1],
                                                                                        len(rest), executor.device)})
            found.update(zip(rest, kept[UNEMBED_INPUT]))
        return torch.stack([found[i] for i in indices])


def best_length(prompts: Sequence[Sequence[int]], rest: int = 1) -> int:
    """The prefix length p minimising (distinct prefixes x p) + (prompts x tokens after p), or 0
    when it saves less than MIN_SAVING of the tokens; every prompt keeps at least `rest` tokens
    after p (kv.exact_rest)."""
    if len(prompts) < 2:
        return 0
    total = sum(len(p) for p in prompts)
    shortest = min(len(p) for p in prompts)
    best, best_cost = 0, total
    for length in range(1, shortest - max(1, rest) + 1):
        distinct = len({tuple(p[:length]) for p in prompts})
        cost = distinct * length + total - len(prompts) * length
        if cost < best_cost:
            best, best_cost = length, cost
    return best if best_cost <= (1 - MIN_SAVING) * total else 0


def continuable(executor, prompts) -> int:
    """How many positions a continued forward of this executor's model must run (kv.exact_rest,
    found once per executor, or read from an earlier run's probe of the same: runtime/probes.py);
    0 when it cannot continue."""
    if executor.kv_rest is None:
        from .probes import exact_rest

        longest = max(prompts, key=len)
        executor.kv_rest = exact_rest(executor, torch.tensor([list(longest)] * 2, dtype=torch.long))
    return int(executor.kv_rest)


def whole_prompts(executor, prompts: List[Sequence[int]], length: int, what: str):
    """(each layer's keys and values of the first `length` positions, [prompts, d_model] final
    residuals) of whole prompts, right-padded in one batched sweep; None if a layer was missed."""
    from .executor import at_final, by_length, pad_right
    from .unembed import UNEMBED_INPUT

    order = by_length(prompts)

    def one_batch(rows: slice):
        tokens, final = pad_right([prompts[i] for i in order[rows]])
        store: kv.KV = {}
        with kv.recording(executor.model, store):
            _, kept = executor.capture(tokens, {UNEMBED_INPUT: at_final(final)}, stop_after=UNEMBED_INPUT)
        return {layer: (k[:, :, :length], v[:, :, :length]) for layer, (k, v) in store.items()}, kept[UNEMBED_INPUT]

    parts = executor.map_batches(len(prompts), max(len(p) for p in prompts), one_batch,
                                 f"{what} (shared prefixes)" if what else "")
    past = kv.joined([store for store, _ in parts], executor.cfg.n_layers)
    if past is None:
        return None
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    return {layer: (k[back], v[back]) for layer, (k, v) in past.items()}, torch.cat([x for _, x in parts])[back]
