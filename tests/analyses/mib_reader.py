"""A reader of MIB circuit files written from MIB's own loading code, for the round-trip tests.

MIB-circuit-track reads a submission with EAP-IG's `Graph.from_json`
(MIB_circuit_track/circuit_loading.py `load_graph_from_json` is the same code): it asserts the
keys cfg, nodes and edges; builds `Graph.from_model(cfg)` (needs n_layers, n_heads,
parallel_attn_mlp and d_model; every head gets its own q, k and v inputs); sets
`g.nodes[name].in_graph` for every node but the logits, and `score`, `neurons`,
`neurons_scores` where given; and sets `g.edges[name].score` and `.in_graph` for every
edge in the file. An unknown node or edge name is a KeyError there, so it is one here.
Its tensors are indexed as EAP-IG indexes them: forward index 1 + layer (H + 1) + head
(MLP: + H), backward index layer (3H + 1) + 'qkv'.index(letter) H + head (MLP: + 3H),
logits last.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import torch


def graph_names(cfg) -> Dict[str, List[str]]:
    """Node names and edge names in the order Graph.from_model creates them."""
    n_layers, n_heads, parallel = cfg["n_layers"], cfg["n_heads"], cfg["parallel_attn_mlp"]
    cfg["d_model"]  # from_model keeps it for neuron-level graphs: a KeyError without it
    nodes, edges = ["input"], []
    stream = ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        nodes += heads + [f"m{layer}"]
        for u in stream:
            edges += [f"{u}->{head}<{letter}>" for head in heads for letter in "qkv"]
            if parallel:
                edges.append(f"{u}->m{layer}")
        stream = stream + heads
        if not parallel:
            edges += [f"{u}->m{layer}" for u in stream]
        stream = stream + [f"m{layer}"]
    edges += [f"{u}->logits" for u in stream]
    return {"nodes": nodes + ["logits"], "edges": edges}


def forward_index(cfg, name: str) -> int:
    if name == "input":
        return 0
    if name[0] == "m":
        return 1 + int(name[1:]) * (cfg["n_heads"] + 1) + cfg["n_heads"]
    layer, head = name.split(".")
    return 1 + int(layer[1:]) * (cfg["n_heads"] + 1) + int(head[1:])


def backward_index(cfg, name: str) -> int:
    H = cfg["n_heads"]
    if name == "logits":
        return cfg["n_layers"] * (3 * H + 1)
    if name[0] == "m":
        return int(name[1:]) * (3 * H + 1) + 3 * H
    head, letter = name[:-3], name[-2]
    layer, h = head.split(".")
    return int(layer[1:]) * (3 * H + 1) + "qkv".index(letter) * H + int(h[1:])


def load_graph_from_json(path: Path) -> Dict:
    d = json.loads(Path(path).read_text())
    assert all(k in d for k in ("cfg", "nodes", "edges")), "Bad input JSON format - Missing keys"
    cfg = d["cfg"]
    names = graph_names(cfg)
    known_nodes, known_edges = set(names["nodes"]), set(names["edges"])
    n_forward, n_backward = 1 + cfg["n_layers"] * (cfg["n_heads"] + 1), cfg["n_layers"] * (3 * cfg["n_heads"] + 1) + 1
    out = {"cfg": cfg, "scores": torch.zeros(n_forward, n_backward),
           "in_graph": torch.zeros(n_forward, n_backward, dtype=torch.bool),
           "nodes_in_graph": torch.zeros(n_forward, dtype=torch.bool), "nodes_scores": None, "neurons_in_graph": None,
           "neurons_scores": None, "edge_names": names["edges"]}
    for name, node in d["nodes"].items():
        if name == "logits":
            continue
        if name not in known_nodes:
            raise KeyError(name)
        i = forward_index(cfg, name)
        out["nodes_in_graph"][i] = node["in_graph"]
        if "score" in node:
            if out["nodes_scores"] is None:
                out["nodes_scores"] = torch.full((n_forward,), float("nan"))
            out["nodes_scores"][i] = node["score"]
        for key, dtype in (("neurons", torch.bool), ("neurons_scores", torch.float32)):
            if key in node:
                slot = f"{key}_in_graph" if key == "neurons" else key
                if out[slot] is None:
                    out[slot] = torch.zeros(n_forward, cfg["d_model"], dtype=dtype)
                out[slot][i] = torch.tensor(node[key]).to(dtype)
    for name, info in d["edges"].items():
        if name not in known_edges:
            raise KeyError(name)
        parent, child = name.split("->")
        s, t = forward_index(cfg, parent), backward_index(cfg, child)
        out["scores"][s, t] = info["score"]
        out["in_graph"][s, t] = info["in_graph"]
    return out
