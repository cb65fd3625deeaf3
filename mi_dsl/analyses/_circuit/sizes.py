"""Graph sizes and pass counts for `mi-run plan`, without torch or weights.

Dimensions come from the model source's offline shape (models/sources.py); models whose
shape is unknown offline get their counts when they load (the result records them).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ...models.sources import model_shape

# MIB's faithfulness-curve levels: percentages of the graph's edges.
LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)

def dimensions(model) -> Optional[Tuple[int, int, int, bool]]:
    """(n_layers, n_heads, n_kv_heads, parallel attention and MLP) from the model source's offline shape."""
    shape = model_shape(model)
    if shape is None:
        return None
    return shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.parallel


def counts(n_layers: int, n_heads: int, n_kv: int, parallel: bool) -> Dict[str, int]:
    forward = 1 + n_layers * (n_heads + 1)
    per_layer = n_heads + 2 * n_kv + 1
    edges = forward  # into the logits
    for layer in range(n_layers):
        before = 1 + layer * (n_heads + 1)
        edges += (n_heads + 2 * n_kv) * before + (before if parallel else before + n_heads)
    return {"nodes": forward + 1, "inputs": n_layers * per_layer + 1, "edges": edges}


def passes(method: str, steps: int, n_layers: Optional[int] = None) -> Tuple[int, int]:
    """(forwards, backwards) per batch of prompts (eap_ig_activations: per layer output, so it needs
    n_layers; None counts one)."""
    if method == "eap":
        return 2, 1
    if method == "eap_ig_inputs":
        return 2 + steps, steps
    if method == "eap_ig_activations":
        outputs = 2 * (n_layers or 1) + 1
        return 3 + outputs * steps, outputs * steps
    if method == "clean_corrupted":
        return 4, 2
    if method == "eap_ig_pinned_inputs":
        return 3 + steps, steps
    return 2, 0  # exact: plus one stacked row per edge


def plan_line(model, params) -> str:  # params: the analysis's CircuitParams
    methods = params.methods
    steps = params.steps
    dims = dimensions(model)
    if dims is None:
        size = "graph sizes counted when the model loads"
        n_edges = None
    else:
        c = counts(*dims)
        n_edges = c["edges"]
        size = (f"{dims[0]} layers x {dims[1]} heads ({dims[2]} key/value heads): {c['nodes']} nodes, "
                f"{c['inputs']} node inputs, {c['edges']:,} edges")
    work = []
    for m in methods:
        f, b = passes(m, steps, dims[0] if dims else None)
        extra = f" + {n_edges:,} stacked patched rows" if m == "exact" and n_edges else \
            (" + one stacked patched row per edge" if m == "exact" else "")
        work.append(f"{m}{f' ({steps} steps)' if m.startswith('eap_ig') else ''}: {f} forwards + {b} backwards{extra}")
    n_levels = len(params.levels)
    if params.curve:
        rankings = 2 if params.rankings == "mib" else 1
        per = 1 + n_levels * rankings
        work.append(f"curve: {per} forwards per method (+{n_levels} for the random baseline, +4 for the baselines)")
    boot = (params.stability or {}).get("bootstrap")
    if boot:
        work.append(f"stability: {boot} rescorings of {methods[0]}")
    keep = (f"{params.keep_edges} edges" if params.keep_edges is not None
            else f"{params.keep_percent:g}% of edges")
    level = params.level + (" (q/k/v merged)" if params.merge_qkv else "")
    return (f"{level} circuit over {size}; per batch {'; '.join(work)}; circuit: top {keep} by {params.select}; "
            f"CPR/CMD over {params.area} fractions")


# ----------------------------------------------------------------------------- time and memory

def cost_line(model, params, pairs: int, tokens: int) -> Optional[str]:
    """One line for `mi-run plan`: estimated seconds on one CPU thread and peak activation memory (the
    model source's offline shape; None when it is not known offline)."""
    shape = model_shape(model)
    if shape is None:
        return None
    dims = shape.as_dims()
    if params.max_pairs:
        pairs = min(pairs, params.max_pairs)
    e = estimate(dims, params, pairs, tokens)
    return (f"~{e['seconds']:.0f} s on one CPU thread at {CPU_FLOPS / 1e9:.0f} GFLOP/s ({e['flops'] / 1e12:.2f} TFLOP "
            f"for {pairs} pairs x {tokens} tokens); activations ~{e['activation_bytes'] / 2 ** 20:.0f} MiB at batch "
            f"{e['batch']} (plus the weights)" + ("" if params.batch_size else
                                                  f"; a GPU takes as many pairs a batch as half its free memory holds, "
                                                  f"~{e['per_row_bytes'] / 2 ** 20:.0f} MiB each"))


# Effective fp32 throughput of one CPU thread on the circuit engine's work (model matmuls, edge
# ablation and score products), measured on the development machine by benchmarks/circuit_cost.py
# (Gemma-3-270m, 15 tokens, CPU time: 28 GFLOP/s for EAP-IG-inputs + EAP with both curves on 8 pairs,
# 36 for EAP-IG-activations and 34 for EAP on 8 pairs, 40 for EAP-IG-inputs on 100 pairs): the time
# estimate is work / this, within about 20% of the CPU time on that machine; a contended machine's
# wall-clock is longer.
CPU_FLOPS = 34e9
PARALLEL_COPIES = 5  # [B, S, F, d] tensors alive while scoring: off, clean outputs, difference, its float64 copy

# Prompts per pass when the spec gives no batch_size. On a CPU at most CPU_ROWS: a pass is compute-bound
# there and a bigger batch only raises the peak memory. On a GPU as many as half its free memory holds
# (rows_within's bound, 512): there a pass costs its operator launches more than its arithmetic (EAP-IG-inputs
# on Gemma-3-270m launches ~136,000 per batch), and 1,000 pairs in batches of 16 took 78 s on an H200
# whose bare forwards and backwards of the same tokens took 2.3 s (benchmarks/results/gpu-h200-2026-12-04*).
CPU_ROWS = 16
# Rows a CPU pass of stacked circuits may hold (faithfulness.py): a faithfulness curve's ablated forwards
# of 16 pairs x 11 positions (Gemma-3-270m) took 0.32 s a circuit one at a time and 0.26 s four at a time,
# their matrix products of 704 rows running at 205 GFLOP/s against 160 at 176 rows; eight gained no more.
STACK_ROWS = 64


def bytes_per_row(d: int, layers: int, heads: int, head_dim: int, intermediate: int, tokens: int,
                  forward_nodes: int) -> int:
    """One prompt's memory while a batch is scored: the [S, F, d] copies alive at once plus the graph a
    forward keeps for its backward (compile/memory.py), fp32. The run sizes its batches by it and
    `mi-run plan` reports it."""
    from ...compile.memory import graph_bytes_per_row

    parallel = PARALLEL_COPIES * tokens * forward_nodes * d * 4
    return parallel + graph_bytes_per_row(tokens, d, intermediate, heads, head_dim, layers)


def estimate(dims: Dict[str, Any], params, pairs: int, tokens: int,
             flops_per_second: float = CPU_FLOPS) -> Dict[str, Any]:
    """The circuit analysis's work, time and peak memory from the model's shape (compile/memory.py's
    model_dims: hidden, layers, heads, kv_heads, head_dim, intermediate, gated), `pairs` prompt pairs of
    `tokens` tokens. Work is counted per token: a forward is the model's matmuls (no unembedding: the
    metric reads two rows of it) plus the heads' outputs; an ablated forward adds 2 d per edge; a backward
    is two forwards plus 2 d per edge for the score products."""
    layers, heads = dims["layers"], dims["heads"]
    d, hd = dims["hidden"], dims["head_dim"]
    c = counts(layers, heads, dims["kv_heads"], bool(dims.get("parallel", False)))
    edges, forward_nodes = c["edges"], c["nodes"] - 1
    model = 2 * layers * (d * hd * (heads + 2 * dims["kv_heads"]) + heads * hd * d
                          + (3 if dims.get("gated") else 2) * d * dims["intermediate"] + 2 * heads * hd * tokens)
    plain = model + 2 * layers * heads * hd * d
    ablated = plain + 2 * d * edges
    backward = model + 2 * d * edges  # parameters are frozen: gradients of activations only
    steps, n_levels = params.steps, len(params.levels)
    rankings = 2 if params.rankings == "mib" else 1
    per_method = {"eap": 2 * plain + backward, "eap_ig_inputs": (2 + steps) * plain + steps * backward,
                  "eap_ig_activations": 3 * plain + (2 * layers + 1) * steps * (plain + backward),
                  "clean_corrupted": 4 * plain + 2 * backward,
                  "eap_ig_pinned_inputs": 2 * plain + ablated + steps * (plain + backward),
                  "exact": 2 * plain + edges * ablated}
    curve = (plain + n_levels * rankings * ablated) if params.curve else 0
    work = 2 * plain + 2 * ablated  # the baselines
    for i, method in enumerate(params.methods):
        work += per_method[method] + ablated + curve + (n_levels * ablated if i == 0 and params.curve
                                                        and params.random_baseline else 0)
    stability = params.stability or {}
    rescoring = per_method[params.methods[0]] + (2 * ablated + curve if params.curve else 0)
    work += (stability.get("bootstrap") or 0) * rescoring + (rescoring if stability.get("by_slot") else 0)
    work *= pairs * tokens
    batch = min(CPU_ROWS, params.batch_size or CPU_ROWS, pairs)
    per_row = bytes_per_row(d, layers, heads, hd, dims["intermediate"], tokens, forward_nodes)
    return {"flops": work, "seconds": work / flops_per_second, "batch": batch,
            "activation_bytes": batch * per_row, "per_row_bytes": per_row, "edges": edges}
