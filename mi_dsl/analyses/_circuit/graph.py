"""The computational graph: nodes, edges and their index layout, as plain tensors.

Forward (source) nodes, in the order the model computes them:
    input, a0.h0 .. a0.h{H-1}, m0, a1.h0, ..., m{L-1}
Backward (destination) inputs, per layer: the query input of each query head, the key
and value inputs of each key/value head, the MLP input; then the logits.

Grouped-query models (Gemma, Llama) share one key/value head between H / H_kv query
heads, so a key or value edge feeds that shared head: u -> a3.g0<k> patches the key
input of every query head of group 0 at once. Multi-head models have H_kv = H and the
graph is the EAP-IG one (q, k, v per head).

Because source nodes are topologically ordered, every destination's parents are a
prefix of the forward order: `n_upstream[v]` of them. Edge scores and masks are
[n_forward, n_backward] tensors, with `edge_mask` marking the real edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import torch

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel_attn_mlp: bool = False
    # A post-attention norm (Gemma) divides every head's output by one scale computed from
    # the whole layer's output: changing one head's inputs changes its siblings' outputs.
    coupled_heads: bool = False
    forward_names: Tuple[str, ...] = field(init=False)
    backward_names: Tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.n_heads} query heads do not split into {self.n_kv_heads} key/value groups")
        fwd = ["input"]
        bwd: List[str] = []
        for layer in range(self.n_layers):
            fwd += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
            bwd += [f"a{layer}.h{h}<q>" for h in range(self.n_heads)]
            for letter in "kv":
                bwd += [self.kv_name(layer, g, letter) for g in range(self.n_kv_heads)]
            bwd.append(f"m{layer}")
        bwd.append("logits")
        object.__setattr__(self, "forward_names", tuple(fwd))
        object.__setattr__(self, "backward_names", tuple(bwd))

    # ------------------------------------------------------------------ layout

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_name(self, layer: int, group: int, letter: str) -> str:
        """a3.h2<k> when each head has its own key/value head, else a3.g0<k> (a shared group)."""
        if self.n_kv_heads == self.n_heads:
            return f"a{layer}.h{group}<{letter}>"
        return f"a{layer}.g{group}<{letter}>"

    @property
    def n_forward(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_backward(self) -> int:
        return self.n_layers * self.per_layer_backward + 1

    @property
    def per_layer_backward(self) -> int:
        return self.n_heads + 2 * self.n_kv_heads + 1

    def head_index(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def input_slice(self, layer: int, letter: str) -> slice:
        """The backward indices of one layer's q, k, v or mlp ("m") inputs."""
        start = layer * self.per_layer_backward
        if letter == "q":
            return slice(start, start + self.n_heads)
        if letter == "k":
            return slice(start + self.n_heads, start + self.n_heads + self.n_kv_heads)
        if letter == "v":
            start += self.n_heads + self.n_kv_heads
            return slice(start, start + self.n_kv_heads)
        start += self.n_heads + 2 * self.n_kv_heads
        return slice(start, start + 1)

    @property
    def logits_index(self) -> int:
        return self.n_backward - 1

    def n_upstream_of(self, layer: int, letter: str) -> int:
        """How many forward nodes feed this layer's q/k/v ("q","k","v") or MLP ("m") input."""
        before_layer = 1 + layer * (self.n_heads + 1)
        if letter == "m" and not self.parallel_attn_mlp:
            return before_layer + self.n_heads
        return before_layer

    def n_upstream(self) -> torch.Tensor:
        """[n_backward]: the number of forward nodes feeding each backward input."""
        out = torch.empty(self.n_backward, dtype=torch.long)
        for layer in range(self.n_layers):
            for letter in ("q", "k", "v", "m"):
                out[self.input_slice(layer, letter)] = self.n_upstream_of(layer, letter)
        out[self.logits_index] = self.n_forward
        return out

    def edge_mask(self) -> torch.Tensor:
        """[n_forward, n_backward] bool: True where an edge exists."""
        return torch.arange(self.n_forward)[:, None] < self.n_upstream()[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.n_upstream().sum())

    def owner(self) -> torch.Tensor:
        """[n_backward]: the forward node each backward input belongs to (-1 for the logits)."""
        out = torch.full((self.n_backward,), -1, dtype=torch.long)
        for layer in range(self.n_layers):
            heads = torch.tensor([self.head_index(layer, h) for h in range(self.n_heads)])
            out[self.input_slice(layer, "q")] = heads
            out[self.input_slice(layer, "m")] = self.mlp_index(layer)
            for letter in "kv":
                # a shared key/value input belongs to every head of its group; record the first
                out[self.input_slice(layer, letter)] = heads[::self.group_size]
        return out

    def feeds(self) -> torch.Tensor:
        """[n_backward, n_forward] bool: backward input b is an input of forward node f."""
        out = torch.zeros(self.n_backward, self.n_forward, dtype=torch.bool)
        for layer in range(self.n_layers):
            q = self.input_slice(layer, "q")
            for h in range(self.n_heads):
                node = self.head_index(layer, h)
                out[q.start + h, node] = True
                g = h // self.group_size
                out[self.input_slice(layer, "k").start + g, node] = True
                out[self.input_slice(layer, "v").start + g, node] = True
            out[self.input_slice(layer, "m").start, self.mlp_index(layer)] = True
        return out

    def edge_name(self, source: int, target: int) -> str:
        return f"{self.forward_names[source]}->{self.backward_names[target]}"

    def edge_names(self) -> List[str]:
        """Names of the real edges, in the order of `edge_mask().nonzero()` (row-major)."""
        return [self.edge_name(int(s), int(t)) for s, t in self.edge_mask().nonzero()]

    def describe(self) -> dict:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "parallel_attn_mlp": self.parallel_attn_mlp, "coupled_heads": self.coupled_heads,
                "nodes": self.n_forward + 1, "inputs": self.n_backward, "edges": self.n_edges}

    def couple(self, flags: torch.Tensor) -> torch.Tensor:
        """[F] bool: with coupled heads, a flag on one head of a layer goes to all its heads."""
        if not self.coupled_heads:
            return flags
        flags = flags.clone()
        for layer in range(self.n_layers):
            heads = slice(self.head_index(layer, 0), self.head_index(layer, 0) + self.n_heads)
            flags[heads] = flags[heads].any()
        return flags


def graph_of(bridge) -> Graph:
    """The graph of a TransformerBridge (HookedTransformer-style config)."""
    cfg = bridge.cfg
    kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return Graph(cfg.n_layers, cfg.n_heads, kv, bool(getattr(cfg, "parallel_attn_mlp", False)),
                 hasattr(bridge.blocks[0], "ln1_post"))
