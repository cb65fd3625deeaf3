"""Faithfulness of circuits, and the curve over circuit sizes.

f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), m the mean metric over the prompts,
where C runs with only its edges clean (the others carry the ablated value), empty
ablates every edge and full keeps every edge (the clean run).

The curve takes the top k % of edges at the MIB levels, prunes each circuit and
measures f. Areas use the trapezoid rule over x = (edges kept after pruning) / (all
edges), from the smallest circuit to the full model (x = 1), as MIB does:
  CPR = area under f(x)          (higher is better)
  CMD = area under |1 - f(x)|    (0 is best)
A random circuit of each requested size (random edge ranking, pruned the same way)
is the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .circuits import prune, random_circuit, top_edges
from .engine import GraphModel, Pass, batches
from .scores import mean_outputs, off_outputs

from .sizes import LEVELS  # noqa: E402  (torch-free: the schema's default too)
AREA_NOTE = ("x-axis: fraction of the graph's edges kept after pruning; trapezoids from the smallest "
             "circuit to the full model (x = 1), as MIB computes CPR and CMD")


@dataclass
class Baselines:
    full: float    # m with every edge clean (the clean run)
    empty: float   # m with every edge ablated

    @property
    def direction(self) -> float:
        """sign(m(empty) - m(full)): which way ablation moves the metric."""
        return -1.0 if self.empty < self.full else 1.0

    def faithfulness(self, m: float) -> Optional[float]:
        span = self.full - self.empty
        return None if abs(span) < 1e-9 else (m - self.empty) / span


def circuit_metrics(model: GraphModel, clean: torch.Tensor, corrupted: torch.Tensor, circuits: Sequence[torch.Tensor],
                    *, ablation: str = "patching", batch_size: int = 8,
                    mean: Optional[torch.Tensor] = None) -> List[float]:
    """Mean metric of each circuit (a kept-edge mask) over the prompt pairs."""
    mask = model.graph.edge_mask()
    sums = torch.zeros(len(circuits), dtype=torch.float64)
    with model.split_inputs(), torch.no_grad():
        if ablation == "mean" and mean is None:
            mean = mean_outputs(model, corrupted, batch_size)
        for part in batches(len(clean), batch_size):
            rows = torch.arange(part.start, part.stop)
            off = off_outputs(model, corrupted[part], ablation, mean, rows)
            for i, kept in enumerate(circuits):
                complement = (mask & ~kept).to(device=off.device, dtype=off.dtype)
                job = model.run(clean[part], Pass(rows, capture_outputs=False, off=off, complement=complement))
                sums[i] += float(job.metric.double().sum())
    return (sums / len(clean)).tolist()


def baselines(model: GraphModel, clean, corrupted, *, ablation="patching", batch_size=8, mean=None) -> Baselines:
    mask = model.graph.edge_mask()
    full, empty = circuit_metrics(model, clean, corrupted, [mask, torch.zeros_like(mask)],
                                  ablation=ablation, batch_size=batch_size, mean=mean)
    return Baselines(full, empty)


def area(xs: Sequence[float], ys: Sequence[float]) -> float:
    points = sorted(zip(xs, ys))
    return float(sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in zip(points, points[1:])))


def curve(model: GraphModel, clean, corrupted, scores: torch.Tensor, *, levels=LEVELS, by: str = "abs",
          ablation: str = "patching", batch_size: int = 8, random_seed: int = 0,
          random_baseline: bool = True, base: Optional[Baselines] = None) -> Dict:
    """The faithfulness curve of `scores`'s top-k% circuits (and random ones of the same sizes)."""
    g = model.graph
    total = g.n_edges
    base = base or baselines(model, clean, corrupted, ablation=ablation, batch_size=batch_size)
    sizes = [int(total * k / 100.0) for k in levels]
    circuits = [prune(g, top_edges(g, scores, n, by, base.direction)) for n in sizes]
    gen = torch.Generator().manual_seed(random_seed)
    randoms = [prune(g, random_circuit(g, n, gen)) for n in sizes] if random_baseline else []
    values = circuit_metrics(model, clean, corrupted, circuits + randoms, ablation=ablation, batch_size=batch_size)
    out = {"levels_percent": list(levels), "requested_edges": sizes, "total_edges": total,
           "baseline_full": base.full, "baseline_empty": base.empty, "by": by, "ablation": ablation,
           "area_note": AREA_NOTE}
    out.update(_series("", circuits, values[:len(circuits)], base, total))
    if random_baseline:
        out.update(_series("random_", randoms, values[len(circuits):], base, total))
    return out


def _series(prefix: str, circuits, metrics, base: Baselines, total: int) -> Dict:
    kept = [int(c.sum()) for c in circuits]
    f = [base.faithfulness(m) for m in metrics]
    xs = [k / total for k in kept]
    valid = [(x, y) for x, y in zip(xs, f) if y is not None]
    cpr = area([x for x, _ in valid], [y for _, y in valid]) if len(valid) > 1 else None
    cmd = area([x for x, _ in valid], [abs(1 - y) for _, y in valid]) if len(valid) > 1 else None
    return {f"{prefix}kept_edges": kept, f"{prefix}x": xs, f"{prefix}metric": metrics,
            f"{prefix}faithfulness": f, f"{prefix}cpr": cpr, f"{prefix}cmd": cmd}
