"""The circuit analysis's computation: spec parameters and run context in, data out."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

import torch

from ...errors import RunError
from .circuits import nodes_of, prune, top_edges
from .compare import compare_methods, jaccard, pairwise_mean, resamples, spearman
from .engine import GraphModel
from .faithfulness import baselines, circuit_metrics, curve
from .graph import Graph, graph_of
from .scores import score_edges


def compute(params: Dict[str, Any], run) -> Tuple[Dict[str, Any], Dict[str, List[Dict[str, Any]]]]:
    clean, corrupted = _tokens(run)
    bridge = run.model
    graph = graph_of(bridge)
    make_model = _model_factory(run, bridge, graph)
    batch = params.batch_size or _batch_size(run, graph, clean.shape[1])
    ablation, select = params.ablation, params.select
    methods = params.methods
    model = make_model(torch.arange(len(clean)))
    base = baselines(model, clean, corrupted, ablation=ablation, batch_size=batch)
    mask = graph.edge_mask()
    n_keep = params.keep_edges or max(1, int(graph.n_edges * params.keep_percent / 100))

    scores, circuits, out = {}, {}, {}
    for method in methods:
        started = time.perf_counter()
        result = _score(model, clean, corrupted, method, params, batch, ablation)
        scores[method] = result.scores
        circuits[method] = prune(graph, top_edges(graph, result.scores, n_keep, select, base.direction))
        out[method] = {"seconds": round(time.perf_counter() - started, 3), "forwards": result.forwards,
                       "backwards": result.backwards, "steps": result.steps,
                       "scores": [float(f"{v:.7g}") for v in result.scores[mask].tolist()]}
    metrics = circuit_metrics(model, clean, corrupted, [circuits[m] for m in methods], ablation=ablation,
                              batch_size=batch)
    for method, m in zip(methods, metrics):
        kept = circuits[method]
        out[method].update({"circuit": kept[mask].nonzero().flatten().tolist(), "circuit_edges": int(kept.sum()),
                            "circuit_nodes": int(nodes_of(graph, kept).sum()), "metric": m,
                            "faithfulness": base.faithfulness(m)})
        if params.curve:
            out[method]["curve"] = curve(model, clean, corrupted, scores[method], levels=params.levels,
                                         by=select, ablation=ablation, batch_size=batch,
                                         random_seed=params.seed, base=base,
                                         random_baseline=params.random_baseline and method == methods[0])
    data: Dict[str, Any] = {
        "graph": dict(graph.describe(), d_model=int(run.cfg.d_model)), "batch_size": batch, "ablation": ablation, "select": select,
        "keep_edges_requested": n_keep, "metric_name": run.metric,
        "baselines": {"full": base.full, "empty": base.empty, "direction": base.direction},
        "methods": out, "model": _model_name(run)}
    if len(methods) > 1:
        data["comparison"] = compare_methods(scores, circuits, mask)
    if params.stability:
        data["stability"] = _stability(params, make_model, graph, clean, corrupted, methods[0], scores[methods[0]],
                                       circuits[methods[0]], n_keep, select, base.direction, batch, ablation)
    if params.mib:
        data["mib"] = {"task": params.mib["task"], "model": params.mib.get("model") or _model_name(run)}
    return data, _tables(graph, data, params.top_table)


def _tokens(run) -> Tuple[torch.Tensor, torch.Tensor]:
    clean, corrupted = run.tokens("clean"), run.tokens("corrupted")
    if clean.shape != corrupted.shape:
        raise RunError(f"clean prompts have {clean.shape[1]} tokens but corrupted prompts {corrupted.shape[1]}; "
                       "edge circuits compare them position by position", run.where(),
                       hint="make corrupted prompts tokenize to the same length (prompts.equal_lengths: true, "
                            "or filter the vocabularies)")
    return clean, corrupted


def _model_factory(run, bridge, graph: Graph):
    from ...metrics import compute_metrics

    answers, foils = run.answers().to(run.device), run.foils().to(run.device)
    name, measure = run.metric, run.main_metric

    def make(index: torch.Tensor) -> GraphModel:
        a, f = answers[index.to(run.device)], foils[index.to(run.device)]

        def metric(x, rows):
            rows = rows.to(a.device)
            return compute_metrics(x, a[rows], f[rows], [measure], run.unembed)[name]
        return GraphModel(bridge, graph, metric)
    return make


def _batch_size(run, graph: Graph, length: int) -> int:
    per_row = 4 * length * graph.n_forward * run.cfg.d_model * 4
    return max(1, min(16, run.executor.rows_per_batch(length, per_row)))


def _score(model, clean, corrupted, method, params, batch, ablation):
    return score_edges(model, clean, corrupted, method, steps=params.steps, batch_size=batch,
                       ablation=ablation, max_exact_edges=params.max_exact_edges)


def _stability(params, make_model, graph, clean, corrupted, method, full_scores, full_circuit, n_keep, select,
               direction, batch, ablation) -> Dict[str, Any]:
    mask = graph.edge_mask()
    draws = resamples(len(clean), params.stability["bootstrap"], params.seed)
    circuits, rows = [], []
    for i, index in enumerate(draws):
        result = _score(make_model(index), clean[index], corrupted[index], method, params, batch, ablation)
        kept = prune(graph, top_edges(graph, result.scores, n_keep, select, direction))
        circuits.append(kept)
        rows.append({"resample": i, "jaccard_to_full": jaccard(kept, full_circuit),
                     "spearman_to_full": spearman(result.scores[mask], full_scores[mask]),
                     "circuit_edges": int(kept.sum())})
    to_full = [r["jaccard_to_full"] for r in rows if r["jaccard_to_full"] is not None]
    in_all = torch.stack(circuits).all(0) & full_circuit
    return {"method": method, "bootstrap": len(draws), "resamples": rows,
            "mean_jaccard_to_full": sum(to_full) / len(to_full) if to_full else None,
            "mean_pairwise_jaccard": pairwise_mean(circuits, jaccard),
            "edges_in_every_resample": int(in_all.sum()), "circuit_edges": int(full_circuit.sum())}


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
    edges = graph.edge_mask().nonzero().tolist()
    tables: Dict[str, List[Dict[str, Any]]] = {"top_edges": []}
    for method, m in data["methods"].items():
        order = sorted(range(len(m["scores"])), key=lambda i: -abs(m["scores"][i]))[:top]
        for rank, i in enumerate(order, 1):
            s, t = edges[i]
            tables["top_edges"].append({"method": method, "rank": rank, "edge": graph.edge_name(s, t),
                                        "source": graph.forward_names[s], "target": graph.backward_names[t],
                                        "score": m["scores"][i]})
        tables[f"circuit_{method}"] = [
            {"edge": graph.edge_name(*edges[i]), "source": graph.forward_names[edges[i][0]],
             "target": graph.backward_names[edges[i][1]], "score": m["scores"][i]} for i in m["circuit"]]
    if "comparison" in data:
        tables["comparison"] = data["comparison"]
    if "stability" in data:
        tables["stability"] = data["stability"]["resamples"]
    return tables


def graph_from_data(data: Dict[str, Any]) -> Graph:
    g = data["graph"]
    return Graph(g["n_layers"], g["n_heads"], g["n_kv_heads"], g["parallel_attn_mlp"], g.get("coupled_heads", False))


def scores_tensor(graph: Graph, values: List[float]) -> torch.Tensor:
    out = torch.zeros(graph.n_forward, graph.n_backward)
    out[graph.edge_mask()] = torch.tensor(values, dtype=torch.float32)
    return out
