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
keep-condition and the final pairs' metrics). The executor keeps the latest plans (`KEPT`): the
shared final-position pass reruns the final pairs' clean prompts, which the keep-condition ran, and
continues after their prefixes' keys and values (`covering`, runtime/context.py). Its attention
patterns' first p query rows are the prefix's own, captured with the whole prompts: a causal
row reads no later position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..compile.prefix_work import best_length  # torch-free: the plan's estimate chooses the same prefix
from . import kv
from .patterns import CACHE_BYTES

MAX_KV_BYTES = 256 << 20  # the prefixes' keys and values kept at once
KEPT = 2                  # the latest prefix sets the executor keeps for the run's later forwards,
KEPT_BYTES = 64 << 20     # each when its keys and values are at most this (the syllogisms': 14 MB)


@dataclass
class SharedPrefix:
    length: int                 # p: tokens every prompt's prefix has
    group: torch.Tensor         # [prompts] index of each prompt's prefix
    past: kv.KV                 # layer -> (keys, values) [prefixes, kv heads, p, d_head]
    done: Dict[int, torch.Tensor]  # prompt index -> final residual, for the prompts run whole
    index: Dict[Tuple[int, ...], int] = field(default_factory=dict)  # prefix tokens -> its index
    patterns: Optional[List[torch.Tensor]] = None  # per layer [prefixes, heads, p, p]: the prefix's query rows

    @classmethod
    def plan(cls, executor, prompts: Sequence[Sequence[int]], what: str = "") -> Optional["SharedPrefix"]:
        """The best shared prefix of `prompts`, one whole prompt of each prefix run (its keys and
        values kept), or None when sharing does not pay or the model cannot continue a forward.
        The executor keeps it for the run's later forwards of the same prompts (`covering`)."""
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
        # the prefixes' pattern rows, for a later pass that fills the run's pattern cache (within its budget)
        rows_bytes = 4 * len(prefixes) * cfg.n_layers * cfg.n_heads * length ** 2
        whole = whole_prompts(executor, [prompts[i] for i in first], length, what,
                              with_patterns=rows_bytes <= CACHE_BYTES)
        if whole is None:
            return None
        past, finals, pattern_rows = whole
        shared = cls(length, group, past, {i: finals[j] for j, i in enumerate(first)}, prefixes, pattern_rows)
        if kv.size_bytes(cfg, len(prefixes), length) <= KEPT_BYTES:  # held for the rest of the run
            executor.prefixes = (executor.prefixes + [shared])[-KEPT:]
        return shared

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


def covering(executor, prompts: Sequence[Sequence[int]]) -> Optional[Tuple[SharedPrefix, torch.Tensor]]:
    """(a prefix set this run planned, [prompts] each prompt's prefix in it) when every one of `prompts`
    begins with one of its prefixes and has tokens after it; else None. A later forward of the same
    prompts (the shared final-position pass) then continues after those keys and values."""
    for shared in reversed(executor.prefixes):
        p = shared.length
        groups = [shared.index.get(tuple(ids[:p])) for ids in prompts]
        if prompts and all(g is not None for g in groups) and min(map(len, prompts)) > p:
            return shared, torch.tensor(groups)
    return None


def continuable(executor, prompts) -> int:
    """How many positions a continued forward of this executor's model must run (kv.exact_rest,
    found once per executor, or read from an earlier run's probe of the same: runtime/probes.py);
    0 when it cannot continue."""
    if executor.kv_rest is None:
        from .probes import exact_rest

        longest = max(prompts, key=len)
        executor.kv_rest = exact_rest(executor, torch.tensor([list(longest)] * 2, dtype=torch.long))
    return int(executor.kv_rest)


def whole_prompts(executor, prompts: List[Sequence[int]], length: int, what: str, with_patterns: bool = False):
    """(each layer's keys and values of the first `length` positions, [prompts, d_model] final
    residuals, with `with_patterns` each layer's attention patterns of the first `length` queries
    [prompts, heads, length, length], else or where the model has no pattern hooks None) of whole
    prompts, right-padded in one batched sweep; None if a layer was missed."""
    from .executor import at_final, by_length, pad_right
    from .patterns import PATTERN_HOOK
    from .unembed import UNEMBED_INPUT

    order = by_length(prompts)
    names = [PATTERN_HOOK.format(layer) for layer in range(executor.cfg.n_layers)] if with_patterns else []
    if not all(name in getattr(executor.model, "hook_dict", {}) for name in names):
        names = []

    def one_batch(rows: slice):
        tokens, final = pad_right([prompts[i] for i in order[rows]])
        store: kv.KV = {}
        keep = {name: (lambda act: act[:, :, :length, :length].clone()) for name in names}  # not the whole pattern
        keep[UNEMBED_INPUT] = at_final(final)
        with kv.recording(executor.model, store):
            _, kept = executor.capture(tokens, keep, stop_after=UNEMBED_INPUT)
        return ({layer: (k[:, :, :length], v[:, :, :length]) for layer, (k, v) in store.items()}, kept[UNEMBED_INPUT],
                [kept[name] for name in names])

    parts = executor.map_batches(len(prompts), max(len(p) for p in prompts), one_batch,
                                 f"{what} (shared prefixes)" if what else "")
    past = kv.joined([store for store, _, _ in parts], executor.cfg.n_layers)
    if past is None:
        return None
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    rows = [torch.cat([found[layer] for _, _, found in parts])[back] for layer in range(len(names))] or None
    return ({layer: (k[back], v[back]) for layer, (k, v) in past.items()},
            torch.cat([x for _, x, _ in parts])[back], rows)
