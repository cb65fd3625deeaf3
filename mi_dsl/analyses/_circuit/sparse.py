"""A circuit-ablated forward's ablation when one complement serves every row (engine.py's passes with a
[F, Bw] complement: the baselines, the selected circuits, the faithfulness curves), or when several
circuits run stacked in one forward, each on its own block of rows (`Stacked`)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch


class Sparse:
    """One complement [F, Bw] for every row: each input's ablation from the edges that change it.

    sum over parents u of c[u, v] * delta_u, delta_u = off_u - current_u, is read either
    from the parents with c != 0 (ablated edges), or as the running sum of every recorded
    delta minus the parents with c != 1 (kept edges), whichever list is shorter. The running
    sum is used only when the recorded nodes are exactly the input's parents (forward nodes
    0 .. n_up-1), which the topological order gives; otherwise the ablated parents are read.
    A complete circuit reads nothing; an empty one reads one running sum per input. Deltas
    are kept node-major ([B, S, F, d]) so reading a parent reads one contiguous vector."""

    def __init__(self, complement: torch.Tensor, off: torch.Tensor):
        self.complement = complement
        self.delta = off.clone()                         # [B, S, F, d]: off - current once recorded
        # [B, S, d]: sum of the recorded deltas, at least float32 (a half-precision running sum would
        # round at every node, where the matrix product it replaces accumulates in float32)
        self.total = torch.zeros_like(off[:, :, 0], dtype=torch.promote_types(off.dtype, torch.float32))
        self.count = 0    # forward nodes recorded so far
        self.highest = -1  # the highest index recorded

    def recorded(self, index: slice, value: torch.Tensor) -> None:
        """value [B, S, n, d]: this run's outputs of forward nodes `index`."""
        self.delta[:, :, index] -= value
        self.total += self.delta[:, :, index].sum(2, dtype=self.total.dtype)
        self.count += index.stop - index.start
        self.highest = max(self.highest, index.stop - 1)

    def ablation(self, index: slice, n_up: int) -> torch.Tensor:
        """[B, S, n, d] for inputs `index`, whose parents are forward nodes 0 .. n_up-1."""
        c = self.complement[:n_up, index]                               # [n_up, n]
        ablated = c.ne(0).any(1).nonzero().squeeze(1)
        kept = c.ne(1).any(1).nonzero().squeeze(1)
        B, S, d = self.total.shape
        if len(ablated) == 0:
            return self.total.new_zeros(B, S, c.shape[1], d)
        if len(kept) < len(ablated) and self.count == n_up and self.highest == n_up - 1:
            total = self.total[:, :, None].expand(B, S, c.shape[1], d)
            return total - ((1 - c[kept]).T @ self.delta[:, :, kept]).to(total.dtype) if len(kept) else total
        return c[ablated].T @ self.delta[:, :, ablated]


class Stacked:
    """Several circuits in one forward: the batch is len(complements) equal blocks of rows, block g
    the same prompts ablated by complements[g], each block read by its own `Sparse`. Each block's
    ablation is the very computation its circuit's own forward makes, on the same [rows, S, ...]
    shapes; stacking only makes the model's matrix products taller (faithfulness.py says when)."""

    def __init__(self, complements: Sequence[torch.Tensor], off: torch.Tensor):
        self.rows = off.shape[0] // len(complements)
        if self.rows * len(complements) != off.shape[0]:
            raise ValueError(f"{off.shape[0]} rows do not split into {len(complements)} equal blocks")
        self.parts = [Sparse(c, off[g * self.rows:(g + 1) * self.rows]) for g, c in enumerate(complements)]

    def recorded(self, index: slice, value: torch.Tensor) -> None:
        for g, part in enumerate(self.parts):
            part.recorded(index, value[g * self.rows:(g + 1) * self.rows])

    def ablation(self, index: slice, n_up: int) -> torch.Tensor:
        return torch.cat([part.ablation(index, n_up) for part in self.parts])


def sparse_of(job) -> Optional[Union[Sparse, Stacked]]:
    """An engine.Pass's sparse ablation: its stacked `complements`, or its one [F, Bw] `complement`;
    None where it ablates per row ([B, F, Bw]), per output dimension (neurons), or nothing."""
    if job.off is None or job.ablated_dims is not None:
        if job.complements is not None:
            raise ValueError("stacked circuits ablate whole edges (no ablated_dims), with an off run")
        return None
    if job.complements is not None:  # one circuit alone needs no blocks (nor their concatenation)
        return Stacked(job.complements, job.off) if len(job.complements) > 1 else Sparse(job.complements[0], job.off)
    if job.complement is not None and job.complement.dim() == 2:
        return Sparse(job.complement, job.off)
    return None
