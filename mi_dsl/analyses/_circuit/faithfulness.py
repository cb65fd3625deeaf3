"""Faithfulness of circuits, and the curve over circuit sizes.

f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), m the mean metric over the prompts,
where C runs with only its edges clean (the others carry the ablated value), empty
ablates every edge and full keeps every edge (the clean run).

The curve takes the top int(n * k / 100) scored items (edges, or nodes, neurons, merged
q/k/v edges: `units.py`) at each level k, prunes each circuit and measures f. As MIB
computes them (MIB-circuit-track, MIB_circuit_track/evaluation.py,
`evaluate_area_under_curve`, and print_results.py):
  CPR = area under f over x = k / 100, from the signed ranking (`absolute=False`)
  CMD = area under |1 - f| over x = k / 100, from the absolute ranking (`absolute=True`)
by the trapezoid rule between consecutive requested levels (0.001 ... 1 by default; the
area spans the levels given, 0.999 wide for MIB's). `area: kept` integrates over the
fraction of edges actually kept after pruning instead (mi-dsl's earlier convention), and
`rankings: select` takes both areas from the analysis's own `select` ranking.
A random ranking of the same sizes, pruned the same way, is the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ...runtime import kv
from .circuits import prune
from .engine import GraphModel, Pass, over_batches
from .plain import recall
from .scores import mean_outputs, off_outputs
from .sizes import LEVELS  # torch-free: the schema's default too
from .skipping import skipped_layers

AREAS = ("requested", "kept")
RANKINGS = ("mib", "select")
AREA_NOTES = {
    "requested": "x-axis: the requested fraction of scored items (k / 100); trapezoids between consecutive levels, "
                 "CPR from the signed ranking and CMD from the absolute ranking, as MIB's evaluate_area_under_curve "
                 "and print_results.py compute them",
    "kept": "x-axis: the fraction of the graph's edges kept after pruning; trapezoids from the smallest circuit to "
            "the full model (mi-dsl's `area: kept`, not MIB's)"}


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
                    *, ablation: str = "patching", batch_size: int = 8, mean: Optional[torch.Tensor] = None,
                    neuron_masks: Optional[Sequence[Optional[torch.Tensor]]] = None,
                    known: Sequence[Tuple[torch.Tensor, float]] = ()) -> List[float]:
    """Mean metric of each circuit (a kept-edge mask) over the prompt pairs. `neuron_masks[i]`
    ([F, d] bool, kept output dimensions of each node) makes circuit i a neuron circuit: an
    ablated dimension carries the ablated value on every edge out of its node.

    A circuit that equals an earlier one, or one of `known` (edge circuits whose metric was
    measured by the same passes, e.g. the baselines), is not run again: the curve's 100% level
    is the full model in every ranking, and small levels often prune to the same few edges.
    Equal circuits run the same forwards, so the number is the one a rerun would give."""
    neuron_masks = list(neuron_masks or [None] * len(circuits))
    keys = [_circuit_key(kept, neurons) for kept, neurons in zip(circuits, neuron_masks)]
    found = {_circuit_key(kept, None): value for kept, value in known}
    todo: Dict[tuple, int] = {}
    for n, key in enumerate(keys):
        if key not in found:
            todo.setdefault(key, n)
    values = _distinct_metrics(model, clean, corrupted, [circuits[n] for n in todo.values()],
                               [neuron_masks[n] for n in todo.values()], ablation, batch_size, mean)
    found.update(zip(todo, values))
    return [found[key] for key in keys]


def _circuit_key(kept: torch.Tensor, neurons: Optional[torch.Tensor]) -> tuple:
    """Equal masks (shape, dtype and values) and only they share a key."""
    def key(mask):
        return None if mask is None else (str(mask.dtype), tuple(mask.shape), mask.cpu().numpy().tobytes())
    return key(kept), key(neurons)


def first_position(model: GraphModel, clean: torch.Tensor, corrupted: torch.Tensor, ablation: str) -> int:
    """Where a circuit-ablated forward of these pairs may start (0: at the first position).

    Under patching, at positions before the first token where some clean prompt differs from its
    corrupted prompt (kv.first_difference) every node's ablated value is the clean run's own, so
    every ablated edge adds exactly 0 there and those positions compute what the clean (and the
    corrupted) run computes: a forward can continue after the corrupted capture's keys and values of
    them. Mean and zero ablation change those positions too, so they run whole, as do models that
    cannot continue a forward (kv.exact_rest 0); at least exact_rest positions are run."""
    if ablation != "patching" or clean.shape != corrupted.shape:
        return 0
    return kv.continue_from(kv.first_difference(clean, corrupted), clean.shape[1], model.can_continue(clean))


def _distinct_metrics(model: GraphModel, clean, corrupted, circuits, neuron_masks, ablation, batch_size, mean):
    """Each circuit's mean metric. Edge circuits whose passes skip the same layers (skipping.py) run
    `stack` at a time in one forward (engine.Pass.complements): each on its own block of rows, with
    the ablation and layers its own forward has, so its number is the one that forward gives; only the
    model's matrix products are taller (on a CPU, 16 pairs' 176 rows ran at 160 GFLOP/s, four circuits'
    704 at 205; on a GPU, one forward's launches serve several circuits). GraphModel.stack_rows bounds
    the rows: `stack` circuits a pass, stack_rows over the batch's rows, fixed for the call, so a batch
    halved after running out of memory stacks halved passes."""
    mask = model.graph.edge_mask()
    sums = torch.zeros(len(circuits), dtype=torch.float64)
    start = first_position(model, clean, corrupted, ablation)
    stack = max(1, model.stack_rows // max(1, min(batch_size, len(clean))))
    with model.split_inputs(), torch.no_grad():
        if ablation == "mean" and mean is None:
            mean = mean_outputs(model, corrupted, batch_size)
        def batch_sums(part: slice) -> torch.Tensor:
            rows = torch.arange(part.start, part.stop)
            past = off_attn = None
            if ablation == "patching":  # the keys and values of positions < start are the clean run's too
                capture = model.capture(corrupted[part], rows, keep=part == slice(0, len(clean)), keys=start > 0)
                off, past, off_attn = capture.outputs, capture.past, capture.attn_out[:, start:]
            else:
                off = off_outputs(model, corrupted[part], ablation, mean, rows)
            off = off[:, start:]
            here = torch.zeros(len(circuits), dtype=torch.float64)
            edge_circuits: Dict[tuple, List[Tuple[int, torch.Tensor]]] = {}  # by the layers a pass skips
            for i, (kept, neurons) in enumerate(zip(circuits, neuron_masks)):
                ran = recall(model, clean[part], rows) if neurons is None and torch.equal(kept, mask) else None
                if ran is not None:  # every edge kept: a plain forward of the clean prompts ran already (plain.py)
                    here[i] = float(ran.double().sum())
                    continue
                complement = (mask & ~kept).to(device=off.device, dtype=off.dtype)
                if neurons is None:
                    skips = skipped_layers(model.graph, complement) if off_attn is not None else ()
                    edge_circuits.setdefault(tuple(map(tuple, skips)), []).append((i, complement))
                    continue
                # kept edges carry the node's ablated dimensions too
                ablated_dims = (~(neurons & kept.any(1, keepdim=True))).T.to(device=off.device, dtype=off.dtype)
                job = model.run(clean[part], Pass(rows, capture_outputs=False, off=off,
                                                  complement=mask.to(device=off.device, dtype=off.dtype),
                                                  ablated_dims=ablated_dims, start=start, past=past, off_attn=off_attn))
                here[i] = float(job.metric.double().sum())
            for group in edge_circuits.values():
                for at in range(0, len(group), stack):
                    stacked = group[at:at + stack]
                    metric = _stacked_metric(model, clean[part], rows, off, [c for _, c in stacked], start, past,
                                             off_attn)
                    for (i, _), value in zip(stacked, metric):
                        here[i] = float(value.double().sum())
            return here

        for here in over_batches(model, len(clean), batch_size, batch_sums, "measuring circuits"):
            sums += here
    return (sums / len(clean)).tolist()


def _stacked_metric(model: GraphModel, tokens, rows, off, complements, start: int, past, off_attn) -> torch.Tensor:
    """[circuits, B] the metric of each circuit (one [F, Bw] complement each) on the B rows, from one forward."""
    k = len(complements)
    if k > 1:
        tokens, off = tokens.repeat(k, 1), off.repeat(k, 1, 1, 1)
        past = kv.take(past, torch.arange(len(rows)).repeat(k), start) if past is not None else None
        off_attn = off_attn.repeat(k, 1, 1, 1) if off_attn is not None else None
    job = model.run(tokens, Pass(rows.repeat(k), capture_outputs=False, off=off, complements=list(complements),
                                 start=start, past=past, off_attn=off_attn))
    return job.metric.view(k, len(rows))


def baselines(model: GraphModel, clean, corrupted, *, ablation="patching", batch_size=8, mean=None) -> Baselines:
    mask = model.graph.edge_mask()
    full, empty = circuit_metrics(model, clean, corrupted, [mask, torch.zeros_like(mask)],
                                  ablation=ablation, batch_size=batch_size, mean=mean)
    return Baselines(full, empty)


def area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoids between consecutive points, sorted by x."""
    points = sorted(zip(xs, ys))
    return float(sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in zip(points, points[1:])))


def requested_sizes(n_items: int, levels: Sequence[float]) -> List[int]:
    """int(k / 100 * n) items at each level, as MIB's int(pct * n_scored_items)."""
    return [int(k / 100.0 * n_items) for k in levels]


# A circuit builder: (ranking "signed" | "abs" | a select rule, number of items) -> (kept edges, neuron mask or None)
Build = Callable[[str, int], tuple]


def curve(model: GraphModel, clean, corrupted, build: Build, n_items: int, *, levels=LEVELS, select: str = "abs",
          rankings: str = "mib", area_over: str = "requested", ablation: str = "patching", batch_size: int = 8,
          random_build: Optional[Build] = None, base: Optional[Baselines] = None, unit: str = "edges",
          known: Sequence[Tuple[torch.Tensor, float]] = ()) -> Dict:
    """The faithfulness curves of one method's circuits at `levels` (and random ones of the same sizes).

    `build(ranking, n)` returns the pruned circuit of the n best items under `ranking`; `known`:
    edge circuits already measured on these prompts with this ablation (circuit_metrics)."""
    g = model.graph
    base = base or baselines(model, clean, corrupted, ablation=ablation, batch_size=batch_size)
    sizes = requested_sizes(n_items, levels)
    names = ["signed", "abs"] if rankings == "mib" else [select]
    built = {name: [build(name, n) for n in sizes] for name in names}
    if random_build is not None:
        built["random"] = [random_build("abs", n) for n in sizes]
    flat = [c for name in built for c in built[name]]
    mask = g.edge_mask()
    values = circuit_metrics(model, clean, corrupted, [c[0] for c in flat], ablation=ablation,
                             batch_size=batch_size, neuron_masks=[c[1] for c in flat],
                             known=[(mask, base.full), (torch.zeros_like(mask), base.empty), *known])
    out = {"unit": unit, "levels_percent": list(levels), "requested": sizes, "total_items": n_items,
           "total_edges": g.n_edges, "baseline_full": base.full, "baseline_empty": base.empty,
           "ablation": ablation, "area": area_over, "rankings": rankings, "area_note": AREA_NOTES[area_over]}
    series = {}
    for i, name in enumerate(built):
        chunk = values[i * len(sizes):(i + 1) * len(sizes)]
        series[name] = areas([int(c[0].sum()) for c in built[name]], chunk, base, g.n_edges, levels, area_over)
    out["series"] = series
    cpr_from, cmd_from = ("signed", "abs") if rankings == "mib" else (select, select)
    out.update({"cpr": series[cpr_from]["cpr"], "cmd": series[cmd_from]["cmd"], "cpr_from": cpr_from,
                "cmd_from": cmd_from})
    if "random" in series:
        out.update({"random_cpr": series["random"]["cpr"], "random_cmd": series["random"]["cmd"]})
    return out


def areas(kept: Sequence[int], metrics: Sequence[float], base: Baselines, total_edges: int, levels: Sequence[float],
          area_over: str) -> Dict:
    """One curve's points and areas: f at each level, CPR = area under f, CMD = area under |1 - f|,
    over x = k / 100 (`requested`) or x = kept edges / all edges (`kept`)."""
    f = [base.faithfulness(m) for m in metrics]
    xs = [k / total_edges for k in kept] if area_over == "kept" else [k / 100.0 for k in levels]
    valid = [(x, y) for x, y in zip(xs, f) if y is not None]
    cpr = area([x for x, _ in valid], [y for _, y in valid]) if len(valid) > 1 else None
    cmd = area([x for x, _ in valid], [abs(1 - y) for _, y in valid]) if len(valid) > 1 else None
    return {"kept_edges": list(kept), "x": xs, "metric": metrics, "faithfulness": f, "cpr": cpr, "cmd": cmd}


def edge_builder(graph, scores: torch.Tensor, top) -> Build:
    """build(ranking, n) for plain edge scores: `top(graph, scores, n, ranking)`, pruned."""
    def build(ranking: str, n: int):
        return prune(graph, top(graph, scores, n, ranking)), None
    return build
