"""What a circuit is made of: edges (default), nodes, neurons, or edges with q/k/v merged.

Each granularity turns a method's edge scores into item scores, ranks the items and builds
the pruned circuit of the n best, as MIB's `Graph.apply_topn(n, absolute, level)` does:
  edge    each real edge                                   n_items = edges
  node    each source node (input, head, MLP); a node's score is the sum of its outgoing
          edges' scores (= (off - clean output) . d metric / d output); the circuit holds
          every edge out of a kept node, then pruning       n_items = nodes
  neuron  each output dimension of each source node (d_model per node, MIB's neurons);
          a kept node's ablated dimensions carry the ablated value on all its edges
                                                            n_items = nodes x d_model
  merged  edges with a head's q, k and v inputs as one: u -> a3.h2 (u -> a3.g0 on a
          grouped-query model: the q inputs of the group's heads and its shared k and v);
          its score is the sum of its parts                 n_items = merged edges
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .circuits import prune, ranking
from .graph import Graph

LEVELS = ("edge", "node", "neuron")


class Units:
    def __init__(self, graph: Graph, level: str = "edge", merge_qkv: bool = False):
        if merge_qkv and level != "edge":
            raise ValueError("merged q/k/v applies to edge circuits")
        self.graph, self.level, self.merge_qkv = graph, level, merge_qkv
        self.mask = graph.edge_mask()
        self._unit_of, self._unit_names = _merged_units(graph) if merge_qkv else (None, None)

    @property
    def name(self) -> str:
        return "merged_qkv_edge" if self.merge_qkv else self.level

    def n_items(self, d_model: int) -> int:
        if self.level == "node":
            return self.graph.n_forward
        if self.level == "neuron":
            return self.graph.n_forward * d_model
        return len(self._unit_names) if self.merge_qkv else self.graph.n_edges

    def item_scores(self, edge_scores: torch.Tensor, neuron_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Edge: [F, Bw] (0 off the graph); merged: [U]; node: [F]; neuron: [F, d]."""
        if self.level == "node":
            return edge_scores.sum(1)
        if self.level == "neuron":
            if neuron_scores is None:
                raise ValueError("neuron circuits need neuron scores")
            return neuron_scores
        if self.merge_qkv:
            out = torch.zeros(len(self._unit_names), dtype=torch.float64)
            out.index_add_(0, self._unit_of[self.mask], edge_scores[self.mask].double())
            return out.float()
        return edge_scores

    def item_names(self, d_model: int = 0) -> List[str]:
        if self.level == "node":
            return list(self.graph.forward_names)
        if self.level == "neuron":
            return [f"{n}[{d}]" for n in self.graph.forward_names for d in range(d_model)]
        return list(self._unit_names) if self.merge_qkv else self.graph.edge_names()

    def circuit(self, items: torch.Tensor, n: int, by: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(kept edges [F, Bw] after pruning, kept neurons [F, d] or None) of the n best items."""
        g = self.graph
        if self.level == "edge" and not self.merge_qkv:
            from .circuits import top_edges

            return prune(g, top_edges(g, items, n, by)), None
        if by == "greedy":
            raise ValueError("greedy selection grows edge circuits only")
        chosen = top_items(ranking(items, by).flatten(), n)
        if self.merge_qkv:
            kept = torch.zeros_like(self.mask)
            kept[self.mask] = chosen[self._unit_of[self.mask]]
            return prune(g, kept), None
        if self.level == "node":
            return prune(g, self.mask & chosen[:, None]), None
        neurons = chosen.view(items.shape)
        kept = prune(g, self.mask & neurons.any(1)[:, None])
        return kept, neurons & kept.any(1)[:, None]


def top_items(values: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask of the n largest values (stable: ties keep the earlier item)."""
    kept = torch.zeros(values.numel(), dtype=torch.bool)
    n = max(0, min(int(n), values.numel()))
    if n:
        kept[torch.sort(values.float(), descending=True, stable=True).indices[:n]] = True
    return kept


def _merged_units(graph: Graph) -> Tuple[torch.Tensor, List[str]]:
    """[F, Bw] long: the merged unit of each real edge (-1 elsewhere), and the units' names in order."""
    target_key: List[Tuple] = []
    for name in graph.backward_names:
        if "<" not in name:
            target_key.append(("node", name))
            continue
        layer = int(name[1:].split(".")[0])
        index = int(name.split(".")[1][1:].split("<")[0])
        group = index // graph.group_size if name[-2] == "q" else index
        label = f"a{layer}.h{group}" if graph.group_size == 1 else f"a{layer}.g{group}"
        target_key.append(("head", label))
    unit_of = torch.full((graph.n_forward, graph.n_backward), -1, dtype=torch.long)
    ids: Dict[Tuple, int] = {}
    names: List[str] = []
    for s, t in graph.edge_mask().nonzero().tolist():
        key = (s, target_key[t][1])
        if key not in ids:
            ids[key] = len(names)
            names.append(f"{graph.forward_names[s]}->{target_key[t][1]}")
        unit_of[s, t] = ids[key]
    return unit_of, names


def random_items(units: "Units", d_model: int, generator: torch.Generator) -> torch.Tensor:
    """Random item scores of the right shape (a random ranking)."""
    n = units.n_items(d_model)
    if units.level == "edge" and not units.merge_qkv:
        return torch.rand(units.graph.n_forward, units.graph.n_backward, generator=generator)
    if units.level == "neuron":
        return torch.rand(units.graph.n_forward, d_model, generator=generator)
    return torch.rand(n, generator=generator)

