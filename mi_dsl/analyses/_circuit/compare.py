"""Comparing edge scores and circuits: rank correlation, overlap, bootstrap stability."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), 0-based."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    r = torch.empty_like(values, dtype=torch.float64)
    r[order] = torch.arange(len(values), dtype=torch.float64)
    # average the ranks of tied runs
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, r[order])
        r[order] = (sums / counts)[inverse]
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> Optional[float]:
    if len(a) < 2:
        return None
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm())
    return None if denom == 0 else float((ra * rb).sum() / denom)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> Optional[float]:
    union = int((a | b).sum())
    return None if union == 0 else int((a & b).sum()) / union


def pairwise_mean(items: Sequence[torch.Tensor], fn: Callable) -> Optional[float]:
    values = [fn(x, y) for i, x in enumerate(items) for y in items[i + 1:]]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def compare_methods(scores: Dict[str, torch.Tensor], circuits: Dict[str, torch.Tensor],
                    mask: Optional[torch.Tensor]) -> List[Dict]:
    """One row per pair of methods: Spearman of |scores| and of signed scores over real edges (over
    every item when `mask` is None: nodes, neurons, merged edges), Jaccard overlap of their circuits."""
    names = list(scores)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = (scores[a][mask], scores[b][mask]) if mask is not None else (scores[a].flatten(),
                                                                                  scores[b].flatten())
            rows.append({"a": a, "b": b, "spearman_signed": spearman(x, y),
                         "spearman_abs": spearman(x.abs(), y.abs()),
                         "circuit_jaccard": jaccard(circuits[a], circuits[b])})
    return rows


def resamples(n_pairs: int, count: int, seed: int) -> List[torch.Tensor]:
    """`count` bootstrap draws of pair indices (with replacement), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n_pairs, (n_pairs,), generator=gen) for _ in range(count)]
