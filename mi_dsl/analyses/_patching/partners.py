"""Attribution patching's source activations, read from the base forwards where they hold them.

Attribution patching reads, for each pair, the source run's activations at the positions its
forward runs (p.. : attribution.py). Where a pair's source prompt is another pair's base prompt (a
symmetric set, where each pair's swap is a pair too, or a corruption that swaps within the
vocabulary), that pair's base forward, run anyway for its gradient, computes those activations:
the same tokens at the same positions after the same keys and values. So instead of a sweep of
every source prompt:

- the keys and values of positions < p come from one whole forward per distinct first p tokens
  (runtime/shared_prefix.py `whole_prompts`; a base prompt's first p tokens are its source prompt's);
- the batches run the base prompts in an order that puts each prompt next to its partner (the base
  prompt whose tokens are its source prompt), and a row whose partner is in the same batch reads the
  partner's activations from that batch's forward;
- only a row whose partner ran in another batch, or that has none, runs its source prompt: positions
  p.. after the same keys and values, without a gradient.

The numbers are those of a sweep of the source prompts (a forward continued after keys and values
of the whole prompt length computes what the whole forward computes: runtime/kv.py);
tests/runtime/test_prefix_reuse.py compares them with whole prompts run every position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Sequence

from ...errors import RunError

if TYPE_CHECKING:  # the package is imported by the torch-free front end (the analyses' registry)
    import torch


@dataclass
class Partners:
    order: torch.Tensor      # [N] the base prompts in the order the batches run them
    partner: torch.Tensor    # [N] the base prompt whose tokens are prompt i's source prompt; -1: none
    source: torch.Tensor     # [N, positions] the source prompts' tokens
    skip: int                # p: the positions before it are not run
    shared: int = 0          # rows whose source activations came from their partner in the same batch
    captured: int = 0        # rows whose source prompt ran
    runs: int = 0            # forwards that ran them

    @classmethod
    def of(cls, base: "torch.Tensor", source: "torch.Tensor", skip: int) -> "Partners":
        import torch

        from .base_sweep import same_rows

        partner = torch.tensor([-1 if j is None else j for j in same_rows(source, base)], dtype=torch.long)
        order: List[int] = []
        placed = set()
        for i in range(len(base)):  # each prompt, then its partner when each is the other's
            if i in placed:
                continue
            order.append(i)
            placed.add(i)
            j = int(partner[i])
            if j >= 0 and j not in placed and int(partner[j]) == i:
                order.append(j)
                placed.add(j)
        return cls(torch.tensor(order, dtype=torch.long), partner, source, skip)

    def sources(self, run, past, prompts: torch.Tensor, acts: Dict[str, torch.Tensor],
                names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """{hook name: [n, positions p.., ...]} the source activations of base rows `prompts`, whose
        forward's activations (detached, positions p..) are `acts`."""
        import torch

        local = {p: r for r, p in enumerate(prompts.tolist())}
        rows = [local.get(int(self.partner[p]), -1) for p in prompts.tolist()]
        missing = [r for r, found in enumerate(rows) if found < 0]
        self.shared += len(rows) - len(missing)
        self.captured += len(missing)
        ran = self._run(run, past, prompts[missing], names) if missing else {}
        out = {}
        for name in names:
            picked = acts[name][torch.tensor([max(r, 0) for r in rows], device=acts[name].device)]
            if missing:
                picked[torch.tensor(missing, device=picked.device)] = ran[name].to(picked.device, picked.dtype)
            out[name] = picked
        return out

    def _run(self, run, past, prompts: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """The source prompts of `prompts`, positions p.. after their keys and values, no gradient."""
        import torch

        from ...runtime import kv
        from ...runtime.executor import ALL

        tokens = self.source[prompts][:, self.skip:]
        options = {"position_ids": kv.positions(self.skip, self.source.shape[1], len(prompts), run.device)}
        self.runs += 1
        with torch.no_grad(), kv.continuing(run.model, kv.take(past, prompts, self.skip)):
            _, kept = run.executor.capture(tokens, {name: ALL for name in names}, stop_after=names[-1],
                                           forward_kwargs=options)
        return kept


def prefix_keys(run, base: torch.Tensor, skip: int):
    """{layer: (keys, values)} [N, kv heads, p, d_head] of every base prompt's first p positions, from one
    whole forward per distinct first p tokens (of the whole prompt length: runtime/shared_prefix.py)."""
    import torch

    from ...runtime.shared_prefix import whole_prompts

    groups: Dict[tuple, int] = {}
    group = torch.tensor([groups.setdefault(tuple(row[:skip]), len(groups)) for row in base.tolist()])
    first = [int((group == g).nonzero()[0]) for g in range(len(groups))]
    found = whole_prompts(run.executor, [base[i].tolist() for i in first], skip, "attribution patching's prefixes")
    if found is None:  # unchanged_prefix found the seam on every layer before this runs
        raise RunError("internal: the keys and values of some layer were not recorded")
    past, _, _ = found
    return {layer: (k[group.to(k.device)], v[group.to(v.device)]) for layer, (k, v) in past.items()}
