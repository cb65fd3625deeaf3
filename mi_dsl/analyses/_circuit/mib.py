"""The MIB benchmark's circuit-localization submission format (edge importance scores).

One folder per task and model, named `{task}_{model}` (one underscore), holding one JSON
file with a score for every edge of the model's graph:
    {"cfg":   {"n_layers", "n_heads", "parallel_attn_mlp", "d_model", ...},
     "nodes": {"input" | "a{L}.h{H}" | "m{L}" | "logits": {"in_graph": bool}},
     "edges": {"{parent}->{child}" or "{parent}->a{L}.h{H}<q|k|v>": {"score": float, "in_graph": bool}}}
MIB's graph gives every query head its own q, k and v inputs. mi-dsl's key/value edges of
a grouped-query model feed the key/value head a group of query heads shares, so the
export writes each group edge once per query head of the group with score / group size
(to first order, the sum over the group is the effect of patching the shared input),
and reading sums them back. `cfg.n_key_value_heads` records the grouping.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Set, Tuple

import torch

from ...errors import FileAccessError
from .graph import Graph

FILE_NAME = "importances.json"
README = """MIB circuit-localization submission written by mi-dsl (edge importance scores).

Each folder {method}/{task}_{model}/ holds one JSON file with a score for every edge of
MIB's graph (q, k and v inputs per query head). A score estimates the change in the mean
metric when that edge alone carries the ablated (corrupted) activation; in_graph marks
the edges of mi-dsl's pruned circuit. For grouped-query models (cfg.n_key_value_heads <
cfg.n_heads) each key/value edge score of mi-dsl's graph is split evenly over the query
heads of its group.
"""


def to_mib(graph: Graph, scores: torch.Tensor, kept: torch.Tensor, d_model: int) -> Dict[str, Any]:
    cfg = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": graph.parallel_attn_mlp,
           "d_model": d_model, "n_key_value_heads": graph.n_kv_heads}
    from .circuits import nodes_of

    in_nodes = nodes_of(graph, kept).tolist()
    nodes = {name: {"in_graph": bool(in_nodes[i])} for i, name in enumerate(graph.forward_names)}
    nodes["logits"] = {"in_graph": True}
    edges: Dict[str, Dict[str, Any]] = {}
    for s, t in graph.edge_mask().nonzero().tolist():
        score, flag = float(scores[s, t]), bool(kept[s, t])
        for name, share in _mib_names(graph, s, t):
            edges[name] = {"score": score * share, "in_graph": flag}
    return {"cfg": cfg, "nodes": nodes, "edges": edges}


def _mib_names(graph: Graph, source: int, target: int):
    """MIB edge names of one mi-dsl edge, with the share of its score each gets."""
    parent = graph.forward_names[source]
    child = graph.backward_names[target]
    if ".g" not in child:
        return [(f"{parent}->{child}", 1.0)]
    layer, rest = child[1:].split(".g")
    group, letter = int(rest.split("<")[0]), rest[-2]
    size = graph.group_size
    return [(f"{parent}->a{layer}.h{h}<{letter}>", 1.0 / size) for h in range(group * size, (group + 1) * size)]


def mib_edge_names(cfg: Dict[str, Any]) -> Set[str]:
    """Every edge name of MIB's graph for a config (the rule a submission must meet)."""
    n_layers, n_heads, parallel = cfg["n_layers"], cfg["n_heads"], cfg["parallel_attn_mlp"]
    out: Set[str] = set()
    upstream = ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        for u in upstream:
            out.update(f"{u}->{head}<{letter}>" for head in heads for letter in "qkv")
        mlp_sources = upstream if parallel else upstream + heads
        out.update(f"{u}->m{layer}" for u in mlp_sources)
        upstream = upstream + heads + [f"m{layer}"]
    out.update(f"{u}->logits" for u in upstream)
    return out


def check(obj: Dict[str, Any]) -> None:
    """Raise FileAccessError where `obj` breaks the format's rules."""
    for key in ("cfg", "nodes", "edges"):
        if key not in obj:
            raise FileAccessError(f"MIB circuit file has no '{key}'")
    for key in ("n_layers", "n_heads", "parallel_attn_mlp", "d_model"):
        if key not in obj["cfg"]:
            raise FileAccessError(f"MIB circuit file's cfg has no '{key}'")
    expected = mib_edge_names(obj["cfg"])
    found = set(obj["edges"])
    if found != expected:
        missing, extra = sorted(expected - found)[:3], sorted(found - expected)[:3]
        raise FileAccessError(f"MIB circuit file's edges do not match the graph: {len(expected - found)} missing "
                              f"(e.g. {missing}), {len(found - expected)} unknown (e.g. {extra})")
    for name, edge in obj["edges"].items():
        score = edge.get("score")
        if not isinstance(score, (int, float)) or not math.isfinite(score) or not isinstance(edge.get("in_graph"), bool):
            raise FileAccessError(f"MIB edge '{name}' needs a finite float score and a boolean in_graph")


def from_mib(obj: Dict[str, Any]) -> Tuple[Graph, torch.Tensor, torch.Tensor]:
    """(graph, scores [F, Bw], kept [F, Bw]) of a MIB file's content; group edges summed back."""
    check(obj)
    cfg = obj["cfg"]
    graph = Graph(cfg["n_layers"], cfg["n_heads"], cfg.get("n_key_value_heads", cfg["n_heads"]),
                  cfg["parallel_attn_mlp"])
    scores = torch.zeros(graph.n_forward, graph.n_backward, dtype=torch.float64)
    kept = torch.zeros(graph.n_forward, graph.n_backward, dtype=torch.bool)
    for s, t in graph.edge_mask().nonzero().tolist():
        names = _mib_names(graph, s, t)
        flags = {obj["edges"][name]["in_graph"] for name, _ in names}
        if len(flags) > 1:
            raise FileAccessError(f"MIB edges {names[0][0]} ... of one key/value group disagree on in_graph")
        scores[s, t] = sum(obj["edges"][name]["score"] for name, _ in names)
        kept[s, t] = flags.pop()
    return graph, scores.float(), kept


def export_files(data: Dict[str, Any]) -> Dict[str, str]:
    """{relative path: JSON text}: mib/{method}/{task}_{model}/importances.json per method."""
    from .run import graph_from_data, scores_tensor

    graph = graph_from_data(data)
    edge_count = graph.n_edges
    folder = f"{data['mib']['task']}_{data['mib']['model']}"
    files = {"mib/README.txt": README}
    for method, m in data["methods"].items():
        scores = scores_tensor(graph, m["scores"])
        kept = torch.zeros(edge_count, dtype=torch.bool)
        kept[m["circuit"]] = True
        kept_matrix = torch.zeros_like(graph.edge_mask())
        kept_matrix[graph.edge_mask()] = kept
        obj = to_mib(graph, scores, kept_matrix, data["graph"].get("d_model", 0))
        files[f"mib/{method}/{folder}/{FILE_NAME}"] = json.dumps(obj)
    return files


def read_folder(folder: Path) -> Tuple[Graph, torch.Tensor, torch.Tensor]:
    """Read a `{task}_{model}` submission folder back."""
    folder = Path(folder)
    if folder.name.count("_") != 1:
        raise FileAccessError(f"MIB folder '{folder.name}' must be named {{task}}_{{model}} with one underscore")
    files = [p for p in folder.iterdir() if p.suffix == ".json"]
    if len(files) != 1:
        raise FileAccessError(f"MIB folder '{folder}' must hold exactly one .json file of importance scores "
                              f"(found {len(files)})")
    try:
        obj = json.loads(files[0].read_text())
    except (OSError, ValueError) as err:
        raise FileAccessError(f"cannot read MIB circuit file '{files[0]}': {err}") from None
    return from_mib(obj)
