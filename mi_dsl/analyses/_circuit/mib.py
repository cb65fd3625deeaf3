"""The MIB benchmark's circuit-localization submission format (importance scores).

Written as MIB's own scripts lay it out (MIB-circuit-track: run_attribution.py writes,
run_evaluation.py reads `{circuit_dir}/{method}_{ablation}_{level}/{task}_{model}/importances.json`
through EAP-IG's `Graph.from_json`, MIB_circuit_track/circuit_loading.py): one folder per
task and model, named `{task}_{model}` (one underscore), holding one JSON file with a score
for every edge of the model's graph:
    {"cfg":   {"n_layers", "n_heads", "parallel_attn_mlp", "d_model", ...},
     "nodes": {"input" | "a{L}.h{H}" | "m{L}" | "logits": {"in_graph": bool}},
     "edges": {"{parent}->{child}" or "{parent}->a{L}.h{H}<q|k|v>": {"score": float, "in_graph": bool}}}
MIB's graph gives every query head its own q, k and v inputs. mi-dsl's key/value edges of
a grouped-query model feed the key/value head a group of query heads shares, so the
export writes each group edge once per query head of the group with score / group size
(to first order, the sum over the group is the effect of patching the shared input),
and reading sums them back. `cfg.n_key_value_heads` records the grouping.

Signs: MIB attributes its loss, -logit_diff (run_attribution.py: `loss=True`), and its
signed ranking (`absolute=False`) keeps the largest scores. mi-dsl scores the metric itself,
so the files hold -score: MIB's signed ranking of them is mi-dsl's `signed` when the clean
metric is the larger. Node circuits add each node's `score`, neuron circuits its
`neurons` (kept dimensions) and `neurons_scores`, as `Graph.to_json` writes them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple

import torch

from ...errors import FileAccessError
from .graph import Graph

FILE_NAME = "importances.json"
MIB_METHODS = {"eap": "EAP", "eap_ig_inputs": "EAP-IG-inputs", "eap_ig_activations": "EAP-IG-activations",
               "clean_corrupted": "clean-corrupted", "exact": "exact",
               "eap_ig_pinned_inputs": "mi-dsl-eap-ig-pinned-inputs"}
MIB_ABLATIONS = {"patching": "patching", "mean": "mean-positional", "zero": "zero"}
README = """MIB circuit-localization submission written by mi-dsl (edge importance scores).

Each folder {method}_{ablation}_{level}/{task}_{model}/ holds one JSON file with a score for
every edge of MIB's graph (q, k and v inputs per query head), as MIB's run_evaluation.py
finds it with --circuit-dir mib --method {method} --ablation {ablation} --level {level}. A
score estimates the change in MIB's loss (-metric) when that edge alone carries the ablated
(corrupted) activation: the negative of mi-dsl's score; in_graph marks the edges of
mi-dsl's pruned circuit. For grouped-query models (cfg.n_key_value_heads <
cfg.n_heads) each key/value edge score of mi-dsl's graph is split evenly over the query
heads of its group.
"""


def to_mib(graph: Graph, scores: torch.Tensor, kept: torch.Tensor, d_model: int,
           node_scores: Optional[torch.Tensor] = None, neurons: Optional[torch.Tensor] = None,
           neuron_scores: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """The file's content; scores in mi-dsl's sign (they are written negated, MIB's loss sign)."""
    cfg = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": graph.parallel_attn_mlp,
           "d_model": d_model, "n_key_value_heads": graph.n_kv_heads}
    from .circuits import nodes_of

    in_nodes = nodes_of(graph, kept).tolist()
    nodes: Dict[str, Dict[str, Any]] = {}
    for i, name in enumerate(graph.forward_names):
        nodes[name] = {"in_graph": bool(in_nodes[i])}
        if node_scores is not None:
            nodes[name]["score"] = -float(node_scores[i])
        if neurons is not None:
            nodes[name]["neurons"] = [bool(x) for x in neurons[i].tolist()]
            nodes[name]["neurons_scores"] = [-float(x) for x in neuron_scores[i].tolist()]
    nodes["logits"] = {"in_graph": True}
    edges: Dict[str, Dict[str, Any]] = {}
    for s, t in graph.edge_mask().nonzero().tolist():
        score, flag = -float(scores[s, t]), bool(kept[s, t])
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
        if (not isinstance(score, (int, float)) or not math.isfinite(score)
                or not isinstance(edge.get("in_graph"), bool)):
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
        scores[s, t] = -sum(obj["edges"][name]["score"] for name, _ in names)
        kept[s, t] = flags.pop()
    return graph, scores.float(), kept


def folder_of(method: str, ablation: str, level: str, task: str, model: str) -> str:
    """mib/{method}_{ablation}_{level}/{task}_{model}: where MIB's run_evaluation.py looks."""
    return f"mib/{MIB_METHODS[method]}_{MIB_ABLATIONS[ablation]}_{level}/{task}_{model}"


def export_files(data: Dict[str, Any]) -> Dict[str, str]:
    """{relative path: JSON text}: one importances.json per method."""
    from .run import circuit_tensor, graph_from_data, scores_tensor

    graph = graph_from_data(data)
    level = "edge" if data.get("level", "edge") in ("edge", "merged_qkv_edge") else data["level"]
    d_model = data["graph"].get("d_model", 0)
    files = {"mib/README.txt": README}
    for method, m in data["methods"].items():
        node_scores = neurons = neuron_scores = None
        if level == "node":
            node_scores = torch.tensor([m["item_scores"][n] for n in graph.forward_names])
        if level == "neuron":
            neuron_scores = torch.tensor([m["item_scores"][f"{n}[{d}]"] for n in graph.forward_names
                                          for d in range(d_model)]).view(graph.n_forward, d_model)
            neurons = torch.zeros(graph.n_forward, d_model, dtype=torch.bool)
            for name in m.get("circuit_neuron_names", []):
                node, dim = name[:-1].split("[")
                neurons[graph.forward_names.index(node), int(dim)] = True
        obj = to_mib(graph, scores_tensor(graph, m["scores"]), circuit_tensor(graph, m["circuit"]), d_model,
                     node_scores, neurons, neuron_scores)
        folder = folder_of(method, data["ablation"], level, data["mib"]["task"], data["mib"]["model"])
        files[f"{folder}/{FILE_NAME}"] = json.dumps(obj)
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
