"""Circuits: which edges to keep, given scores, and pruning to a connected subgraph.

A circuit is a [n_forward, n_backward] bool tensor `kept` (only real edges). Ranking:
  abs     by |score|
  signed  by -score: first the edges whose ablation lowers the metric most (MIB's signed
          ranking, `absolute=False`, of its scores of the loss -metric)
  greedy  from the logits up: repeatedly take the best-ranked (|score|) edge into a
          node already in the circuit (MIB's greedy)
Pruning removes edges out of nodes with no kept path from the input and edges into
nodes with no kept path to the logits; under patching ablation this never changes
the circuit's metric (such edges carry the ablated value either way). With a
post-attention norm the heads of a layer share one scale, so a path into (or out of)
one head counts for all heads of its layer.
"""
from __future__ import annotations

import heapq
from typing import Optional

import torch

from .graph import Graph

SELECTIONS = ("abs", "signed", "greedy")


def ranking(scores: torch.Tensor, by: str) -> torch.Tensor:
    """Values to sort items by, descending: |score|, or -score for `signed` (first the items whose
    ablation lowers the metric most: MIB's signed ranking, which sorts scores of its loss -metric)."""
    if by == "signed":
        return -scores
    return scores.abs()


def top_edges(graph: Graph, scores: torch.Tensor, n: int, by: str = "abs") -> torch.Tensor:
    """The circuit of the n best-ranked edges (before pruning)."""
    mask = graph.edge_mask()
    n = max(0, min(int(n), int(mask.sum())))
    if by == "greedy":
        return greedy(graph, scores.abs(), n)
    values = ranking(scores, by).masked_fill(~mask, float("-inf")).flatten()
    kept = torch.zeros(mask.numel(), dtype=torch.bool)
    if n:
        order = torch.sort(values.float(), descending=True, stable=True).indices
        kept[order[:n]] = True
    return kept.view(mask.shape) & mask


def greedy(graph: Graph, values: torch.Tensor, n: int) -> torch.Tensor:
    """Grow from the logits: the best edge into a node already reached, n times."""
    mask = graph.edge_mask()
    feeds = graph.feeds()                      # [Bw, F]
    inputs_of = [feeds[:, f].nonzero().flatten().tolist() for f in range(graph.n_forward)]
    n_up = graph.n_upstream().tolist()
    vals = values.tolist()
    kept = torch.zeros_like(mask)
    heap: list = []
    opened = set()

    def open_input(b: int) -> None:
        if b in opened:  # a shared key/value input is reached through each head of its group
            return
        opened.add(b)
        for u in range(n_up[b]):
            heapq.heappush(heap, (-vals[u][b], u, b))

    open_input(graph.logits_index)
    reached = {0}
    while n > 0 and heap:
        _, u, b = heapq.heappop(heap)
        if kept[u, b]:
            continue
        kept[u, b] = True
        n -= 1
        if u not in reached:
            reached.add(u)
            for inp in inputs_of[u]:
                open_input(inp)
    return kept


def prune(graph: Graph, kept: torch.Tensor) -> torch.Tensor:
    """Only edges on a kept path from the input to the logits."""
    kept = kept & graph.edge_mask()
    feeds = graph.feeds().float()              # [Bw, F]
    while True:
        # a node is fed when one of its inputs has a kept edge from a fed node (input: always)
        fed = torch.zeros(graph.n_forward, dtype=torch.bool)
        fed[0] = True
        for _ in range(graph.n_layers * 2 + 2):
            has_input = (kept & fed[:, None]).any(0).float()          # [Bw]
            new = graph.couple(has_input @ feeds > 0)
            new[0] = True
            if torch.equal(new, fed):
                break
            fed = new
        # a node is useful when one of its outgoing kept edges reaches a useful input
        useful_in = torch.zeros(graph.n_backward, dtype=torch.bool)
        useful_in[graph.logits_index] = True
        for _ in range(graph.n_layers * 2 + 2):
            useful_node = graph.couple((kept & useful_in[None, :]).any(1))   # [F]
            new = (feeds @ useful_node.float() > 0)
            new[graph.logits_index] = True
            if torch.equal(new, useful_in):
                break
            useful_in = new
        useful_node = graph.couple((kept & useful_in[None, :]).any(1))
        pruned = kept & fed[:, None] & useful_node[:, None] & useful_in[None, :]
        if torch.equal(pruned, kept):
            return kept
        kept = pruned


def nodes_of(graph: Graph, kept: torch.Tensor) -> torch.Tensor:
    """[F] bool: forward nodes touching a kept edge."""
    out = kept.any(1) | (graph.feeds().float().T @ kept.any(0).float() > 0)
    out[0] = out[0] | kept.any()
    return out


def random_circuit(graph: Graph, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    values = torch.rand(graph.n_forward, graph.n_backward, generator=generator)
    return top_edges(graph, values, n, "abs")
