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


def passes(method: str, steps: int) -> Tuple[int, int]:
    """(forwards, backwards) per batch of prompts."""
    if method == "eap":
        return 2, 1
    if method == "eap_ig_inputs":
        return 2 + steps, steps
    if method == "eap_ig_activations":
        return 3 + steps, steps
    return 2, 0  # exact: plus one stacked row per edge


def plan_line(model, params: Dict[str, Any]) -> str:
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
        f, b = passes(m, steps)
        extra = f" + {n_edges:,} stacked patched rows" if m == "exact" and n_edges else \
            (" + one stacked patched row per edge" if m == "exact" else "")
        work.append(f"{m}{f' ({steps} steps)' if m.startswith('eap_ig') else ''}: {f} forwards + {b} backwards{extra}")
    n_levels = len(params.levels)
    if params.curve:
        per = 1 + n_levels * (2 if params.random_baseline else 1)
        work.append(f"curve: {per} forwards per method (+4 for the baselines)")
    boot = (params.stability or {}).get("bootstrap")
    if boot:
        work.append(f"stability: {boot} rescorings of {methods[0]}")
    keep = (f"{params.keep_edges} edges" if params.keep_edges is not None
            else f"{params.keep_percent:g}% of edges")
    return f"edge circuit over {size}; per batch {'; '.join(work)}; circuit: top {keep} by {params.select}"
