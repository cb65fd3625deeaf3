"""Graph sizes and pass counts for `mi-run plan`, without torch or weights.

Dimensions are known up front for the embedded models and the random shapes; other
models get their counts when they load (the result records them).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

# MIB's faithfulness-curve levels: percentages of the graph's edges.
LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)

# (n_layers, n_heads, n_kv_heads, parallel attention and MLP)
KNOWN = {
    ("embedded", "gemma-3-270m"): (18, 4, 1, False),
    ("embedded", "smollm2-135m"): (30, 9, 3, False),
    ("random", "gemma3/tiny"): (2, 4, 1, False),
    ("random", "gemma3/gemma-3-270m"): (18, 4, 1, False),
    ("random", "gpt_neox/tiny"): (2, 4, 4, True),
    ("random", "gpt_neox/pythia-70m"): (6, 8, 8, True),
    ("random", "gpt_neox/pythia-160m"): (12, 12, 12, True),
    ("random", "gpt2/tiny"): (2, 4, 4, False),
    ("random", "gpt2/gpt2"): (12, 12, 12, False),
    ("random", "llama/tiny"): (2, 6, 2, False),
}


def dimensions(model) -> Optional[Tuple[int, int, int, bool]]:
    if model.source == "embedded":
        return KNOWN.get(("embedded", model.name or "gemma-3-270m"))
    if model.source == "random":
        return KNOWN.get(("random", f"{model.architecture}/{model.size}"))
    return None


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


def plan_line(model, params: Dict[str, Any]) -> str:
    methods = params["methods"]
    steps = params["steps"]
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
    n_levels = len(params["levels"])
    if params["curve"]:
        rankings = 2 if params.get("rankings", "mib") == "mib" else 1
        per = 1 + n_levels * rankings
        work.append(f"curve: {per} forwards per method (+{n_levels} for the random baseline, +4 for the baselines)")
    boot = params.get("stability", {}).get("bootstrap")
    if boot:
        work.append(f"stability: {boot} rescorings of {methods[0]}")
    keep = (f"{params['keep_edges']} edges" if "keep_edges" in params
            else f"{params['keep_percent']}% of edges")
    level = params.get("level", "edge") + (" (q/k/v merged)" if params.get("merge_qkv") else "")
    return (f"{level} circuit over {size}; per batch {'; '.join(work)}; circuit: top {keep} by {params['select']}; "
            f"CPR/CMD over {params.get('area', 'requested')} fractions")
