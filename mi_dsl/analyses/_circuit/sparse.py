"""A circuit-ablated forward's ablation when one complement serves every row (engine.py's passes with a
[F, Bw] complement: the baselines, the selected circuits, the faithfulness curves)."""
from __future__ import annotations

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
