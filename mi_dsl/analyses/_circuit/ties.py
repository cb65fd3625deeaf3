"""Near-ties at a circuit's cut: items whose ranking values lie within float error of the
threshold, on both sides of it. A different CPU, thread count or batch size can round such
scores the other way and swap them, which changes the circuit (and, through pruning, its
faithfulness): on another CPU a swapped near-tie once moved a faithfulness point of
specs/ioi_circuit.yaml by 0.027. Each cut reports how many kept and how many dropped items are
that close; a cut with both counts above zero is one a rounding could move."""
from __future__ import annotations

from typing import Any, Dict

import torch

from .circuits import ranking


def near_ties(units, items: torch.Tensor, n: int, by: str, tolerance: float) -> Dict[str, Any]:
    """{ranking, requested, threshold, kept_within, dropped_within}: the items within
    tolerance * max |value| of the cut between the n-th and the (n+1)-th best item."""
    if by == "greedy":
        by = "abs"  # greedy has no single cut; the absolute ranking's is the closest
    values = ranking(items, by)
    if values.dim() == 2 and units.level == "edge" and not units.merge_qkv:
        values = values[units.mask]
    values = torch.sort(values.flatten().double(), descending=True).values
    out = {"ranking": by, "requested": int(n), "threshold": None, "kept_within": 0, "dropped_within": 0}
    if n <= 0 or n >= len(values):
        return out
    eps = tolerance * float(values.abs().max())
    last_kept, first_dropped = float(values[n - 1]), float(values[n])
    out.update({"threshold": last_kept,
                "kept_within": int((values[:n] - first_dropped <= eps).sum()),
                "dropped_within": int((last_kept - values[n:] <= eps).sum())})
    return out
