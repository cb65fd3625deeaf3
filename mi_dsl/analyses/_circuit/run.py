"""The circuit analysis's computation: spec parameters and run context in, data out."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from ...errors import RunError
from .circuits import nodes_of
from .compare import compare_methods
from .engine import GraphModel
from .faithfulness import Baselines, baselines, circuit_metrics, curve, first_position
from .graph import Graph, graph_of
from .scores import Scores, score_edges
from .sizes import CPU_ROWS, STACK_ROWS, bytes_per_row
from .ties import near_ties
from .units import Units, random_items

EDGE_ORDER = ("edges are named '{source}->{target}' and listed source-major: sources in the model's order (input, "
              "a0.h0 .. a0.h{H-1}, m0, a1.h0, ...), then targets in the model's order (per layer: each query head's "
              "<q>, each key/value head's <k>, then <v>, then the MLP; the logits last)")


@dataclass
class Setting:
    """Everything a scoring-and-circuit pass needs besides the prompts."""
    params: Any                     # the analysis's CircuitParams
    graph: Graph
    units: Units
    batch: int
    d_model: int

    @property
    def ablation(self) -> str:
        return self.params.ablation

    def score(self, model: GraphModel, clean, corrupted, method: str) -> Scores:
        p = self.params
        return score_edges(model, clean, corrupted, method, steps=p.steps, batch_size=self.batch,
                           ablation=self.ablation, max_exact_edges=p.max_exact_edges, ig_points=p.ig_points,
                           neurons=self.units.level == "neuron")

    def items(self, result: Scores) -> torch.Tensor:
        return self.units.item_scores(result.scores, result.neurons)

    def curve(self, model, clean, corrupted, items, base: Baselines, random_seed=None, known=()) -> Dict:
        p = self.params
        build = lambda by, n: self.units.circuit(items, n, by)  # noqa: E731
        random_build = None
        if random_seed is not None:
            gen = torch.Generator().manual_seed(random_seed)
            random_build = lambda by, n: self.units.circuit(random_items(self.units, self.d_model, gen), n, "abs")  # noqa: E731
        out = curve(model, clean, corrupted, build, self.units.n_items(self.d_model), levels=p.levels,
                    select=p.select, rankings=p.rankings, area_over=p.area, ablation=self.ablation,
                    batch_size=self.batch, random_build=random_build, base=base, unit=self.units.name, known=known)
        out["near_ties"] = [near_ties(self.units, items, n, by, p.tie_tolerance)
                            for by in out["series"] if by not in ("random", "greedy") for n in out["requested"]]
        out["near_ties"] = [t for t in out["near_ties"] if t["kept_within"] and t["dropped_within"]]
        return out


def compute(params, run) -> Tuple[Dict[str, Any], Dict[str, List[Dict[str, Any]]]]:
    clean, corrupted = _tokens(run)
    bridge = run.model
    graph = graph_of(bridge)
    batch = params.batch_size or _batch_size(run, graph, clean.shape[1])
    make_model = _model_factory(run, bridge, graph, params.batch_size or _stack_rows(run, graph, clean.shape[1], batch))
    units = Units(graph, params.level, params.merge_qkv)
    d_model = int(run.cfg.d_model)
    setting = Setting(params, graph, units, batch, d_model)
    methods, select = params.methods, params.select
    model = make_model(torch.arange(len(clean)))
    n_items = units.n_items(d_model)
    n_keep = params.keep_edges or max(1, int(n_items * params.keep_percent / 100))

    items, circuits, neurons, out = {}, {}, {}, {}
    for method in methods:
        started = time.perf_counter()
        result = setting.score(model, clean, corrupted, method)
        items[method] = setting.items(result)
        circuits[method], neurons[method] = units.circuit(items[method], n_keep, select)
        out[method] = {"seconds": round(time.perf_counter() - started, 3), "forwards": result.forwards,
                       "backwards": result.backwards, "captures_reused": result.captures_reused, "steps": result.steps,
                       "scores": _named(graph.edge_names(), result.scores[graph.edge_mask()])}
        if units.level != "edge" or units.merge_qkv:
            out[method]["item_scores"] = _named(units.item_names(d_model), items[method].flatten())
    # after the scoring: the full circuit's forward is the clean run a method ran (plain.py)
    base = baselines(model, clean, corrupted, ablation=setting.ablation, batch_size=setting.batch)
    metrics = circuit_metrics(model, clean, corrupted, [circuits[m] for m in methods], ablation=setting.ablation,
                              batch_size=setting.batch, neuron_masks=[neurons[m] for m in methods])
    measured = [(circuits[m], value) for m, value in zip(methods, metrics) if neurons[m] is None]  # curves reuse them
    names = graph.edge_names()
    for method, m in zip(methods, metrics):
        kept = circuits[method]
        out[method].update({"circuit": [names[i] for i in kept[graph.edge_mask()].nonzero().flatten().tolist()],
                            "circuit_edges": int(kept.sum()), "circuit_nodes": int(nodes_of(graph, kept).sum()),
                            "metric": m, "faithfulness": base.faithfulness(m),
                            "near_ties": near_ties(units, items[method], n_keep, select, params.tie_tolerance)})
        if neurons[method] is not None:
            out[method]["circuit_neurons"] = int(neurons[method].sum())
            out[method]["circuit_neuron_names"] = [f"{graph.forward_names[f]}[{d}]"
                                                   for f, d in neurons[method].nonzero().tolist()]
        if params.curve:
            seed = params.seed if params.random_baseline and method == methods[0] else None
            out[method]["curve"] = setting.curve(model, clean, corrupted, items[method], base, seed, measured)
    model.forget()  # the corrupted capture: stability's resamples take their own
    data: Dict[str, Any] = {
        "graph": dict(graph.describe(), d_model=d_model, edge_order=EDGE_ORDER),
        "batch_size": setting.batch, "ablation": setting.ablation, "select": select, "level": units.name,
        "ig_points": params.ig_points, "items": n_items, "keep_requested": n_keep, "metric_name": run.metric,
        "baselines": {"full": base.full, "empty": base.empty, "direction": base.direction},
        "methods": out, "model": _model_name(run), "passes": _passes(model, clean, corrupted, setting.ablation)}
    if len(methods) > 1:
        data["comparison"] = compare_methods(items, circuits, graph.edge_mask() if items[methods[0]].dim() == 2
                                             and units.level == "edge" else None)
    if params.stability:
        from .stability import stability

        data["stability"] = stability(setting, make_model, clean, corrupted, run, methods[0], items[methods[0]],
                                      circuits[methods[0]], n_keep, base)
    if params.mib:
        data["mib"] = {"task": params.mib["task"], "model": params.mib.get("model") or _model_name(run)}
    return data, _tables(graph, data, params.top_table)


def _passes(model: GraphModel, clean, corrupted, ablation: str) -> Dict[str, Any]:
    """The forwards of the analysis (stability's rescorings aside) and the work they did not do:
    circuit-ablated forwards under patching ablation skip positions 0 .. positions_skipped - 1
    (faithfulness.first_position) and the attention and MLP layers whose inputs keep no edge of their
    circuit (`layers_skipped`, counted over the forwards: skipping.py)."""
    start = first_position(model, clean, corrupted, ablation)
    full = model.tokens_run + model.tokens_skipped
    return {"forwards": model.forwards, "backwards": model.backwards, "captures_reused": model.captures_reused,
            "kv_reuse": start > 0, "positions_skipped": start,
            "tokens_run": model.tokens_run, "tokens_skipped": model.tokens_skipped,
            "token_work_saved": round(model.tokens_skipped / max(1, full), 4), "layers_skipped": model.layers_skipped}


def _named(names: List[str], values: torch.Tensor) -> Dict[str, float]:
    return {name: float(f"{v:.7g}") for name, v in zip(names, values.tolist())}


def _tokens(run) -> Tuple[torch.Tensor, torch.Tensor]:
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    if clean.shape != corrupted.shape:
        raise RunError(f"clean prompts have {clean.shape[1]} tokens but corrupted prompts {corrupted.shape[1]}; "
                       "edge circuits compare them position by position", run.where(),
                       hint="make corrupted prompts tokenize to the same length (prompts.equal_lengths: true, "
                            "or filter the vocabularies)")
    return clean, corrupted


def _model_factory(run, bridge, graph: Graph, stack_rows: int = 0) -> Callable[[torch.Tensor], GraphModel]:
    """GraphModels measuring the run's metric on dataset rows `index`; `stack_rows`: GraphModel.stack_rows."""
    from ...metrics import compute_metrics
    from ...runtime.shared_prefix import continuable

    answers, foils = run.answers().to(run.device), run.foils().to(run.device)
    name, measure = run.metric, run.main_metric
    clean = run.tokens("clean")
    rest = continuable(run.executor, clean.tolist()) if clean.shape[1] >= 3 else 0

    def make(index: torch.Tensor) -> GraphModel:
        a, f = answers[index.to(run.device)], foils[index.to(run.device)]

        def metric(x, rows):
            rows = rows.to(a.device)
            return compute_metrics(x, a[rows], f[rows], [measure], run.unembed)[name]
        model = GraphModel(bridge, graph, metric)
        model.on_split = run.executor.warn  # a batch split after running out of memory: a located warning
        model.kv_rest = rest                # found once per model for the whole run (runtime/kv.py)
        model.stack_rows = stack_rows
        return model
    return make


def _batch_size(run, graph: Graph, length: int) -> int:
    """sizes.CPU_ROWS prompts a pass on a CPU; on a GPU what half its free memory holds (sizes.py says why)."""
    cfg = run.cfg
    if torch.device(run.device).type != "cuda":
        # The CPU's rule as the golden files recorded it. Its per-row bytes leave out the graph a forward
        # keeps for its backward (bytes_per_row counts it): SmolLM2 at 15 tokens would get 12 rows, not 16.
        return max(1, min(CPU_ROWS, run.executor.rows_per_batch(length, _cpu_row_bytes(run, graph, length))))
    per_row = bytes_per_row(int(cfg.d_model), graph.n_layers, graph.n_heads, int(cfg.d_head),
                            int(getattr(cfg, "d_mlp", None) or 4 * cfg.d_model), length, graph.n_forward)
    return max(1, run.executor.rows_per_batch(length, per_row))


def _stack_rows(run, graph: Graph, length: int, batch: int) -> int:
    """Rows a pass of stacked circuits may hold (faithfulness.py): on a CPU sizes.STACK_ROWS where the
    CPU rule's bytes a row fit (a stacked pass holds fewer: its off values and ablation deltas); on a GPU
    the batch, half its free memory's worth of scoring rows."""
    if torch.device(run.device).type == "cuda":
        return batch
    return max(batch, min(STACK_ROWS, run.executor.rows_per_batch(length, _cpu_row_bytes(run, graph, length))))


def _cpu_row_bytes(run, graph: Graph, length: int) -> int:
    return 4 * length * graph.n_forward * int(run.cfg.d_model) * 4


def _model_name(run) -> str:
    """A short model name for MIB folders: the embedded name, architecture-size, or the id's last part."""
    import re

    model = run.plan.model
    if model.source == "embedded":
        name = model.name or "gemma-3-270m"
    elif model.source == "random":
        name = f"{model.architecture}-{model.size}"
    else:
        name = (model.name or model.path or "model").rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name)


def _tables(graph: Graph, data: Dict[str, Any], top: int) -> Dict[str, List[Dict[str, Any]]]:
    tables: Dict[str, List[Dict[str, Any]]] = {"top_edges": []}
    for method, m in data["methods"].items():
        ranked = sorted(m["scores"].items(), key=lambda kv: -abs(kv[1]))[:top]
        for rank, (edge, score) in enumerate(ranked, 1):
            source, target = edge.split("->")
            tables["top_edges"].append({"method": method, "rank": rank, "edge": edge, "source": source,
                                        "target": target, "score": score})
        tables[f"circuit_{method}"] = [{"edge": edge, "source": edge.split("->")[0], "target": edge.split("->")[1],
                                        "score": m["scores"][edge]} for edge in m["circuit"]]
        if "item_scores" in m:
            ranked_items = sorted(m["item_scores"].items(), key=lambda kv: -abs(kv[1]))[:top]
            tables.setdefault("top_items", []).extend(
                {"method": method, "rank": r, "item": name, "score": s} for r, (name, s) in enumerate(ranked_items, 1))
    ties = [dict(method=method, where="circuit", **m["near_ties"]) for method, m in data["methods"].items()
            if m["near_ties"]["kept_within"] and m["near_ties"]["dropped_within"]]
    ties += [dict(method=method, where="curve", **t) for method, m in data["methods"].items()
             for t in (m.get("curve") or {}).get("near_ties", [])]
    if ties:
        tables["near_ties"] = ties
    if "comparison" in data:
        tables["comparison"] = data["comparison"]
    if "stability" in data:
        if "resamples" in data["stability"]:
            tables["stability"] = data["stability"]["resamples"]
        if "by_slot" in data["stability"]:
            tables["stability_by_slot"] = data["stability"]["by_slot"]["groups"]
    return tables


def graph_from_data(data: Dict[str, Any]) -> Graph:
    g = data["graph"]
    return Graph(g["n_layers"], g["n_heads"], g["n_kv_heads"], g["parallel_attn_mlp"], g.get("coupled_heads", False))


def scores_tensor(graph: Graph, scores: Dict[str, float]) -> torch.Tensor:
    """[F, Bw] from a result's {edge name: score} (every edge of the graph, in any order)."""
    names = graph.edge_names()
    if set(scores) != set(names):
        raise RunError("a circuit result's scores do not name the edges of its graph")
    out = torch.zeros(graph.n_forward, graph.n_backward)
    out[graph.edge_mask()] = torch.tensor([scores[n] for n in names], dtype=torch.float32)
    return out


def circuit_tensor(graph: Graph, edges: List[str]) -> torch.Tensor:
    """[F, Bw] bool from a list of edge names."""
    index = {name: i for i, name in enumerate(graph.edge_names())}
    flat = torch.zeros(graph.n_edges, dtype=torch.bool)
    flat[[index[e] for e in edges]] = True
    out = torch.zeros(graph.n_forward, graph.n_backward, dtype=torch.bool)
    out[graph.edge_mask()] = flat
    return out
