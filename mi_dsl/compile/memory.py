"""`mi-run plan`'s memory estimate: will the model and a batch fit, before loading anything?

Torch-free: sizes come from the model source's offline shape (models/sources.py: the
embedded models' stated shapes, a random preset's, a local or cached config.json); the
parameters are counted from them (ModelShape.parameters). Activations per row use
the executor's own batch-sizing formula, so "fits" here means fits there.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..models.sources import model_shape

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# The executor's default batch budget on a CPU. 1 GB: a forward without a graph fills its
# 512-row cap well under it on small models, and a forward kept for a backward (attribution
# patching) stays within it: the syllogism run's peak RSS was 4.9 GB with 2 GB sized by a
# one-block estimate, and 3.0 GB with this budget and graph_bytes_per_row (same time).
CPU_BUDGET_GB = 1.0


def activation_bytes_per_row(seq_len: int, d_model: int, d_mlp: int, n_heads: int, past: int = 0) -> int:
    """Live activations of one block for one prompt (residual copies, MLP hidden, attention scores), fp32.
    `past`: positions before the forward's seq_len whose keys and values it continues after (runtime/kv.py):
    each query's scores cover them too."""
    return 4 * seq_len * (10 * d_model + 2 * d_mlp + 3 * n_heads * (seq_len + past))


def rows_within(budget_bytes: float, per_row: int) -> int:
    """Prompts per batch that fit the budget: at least 1, at most 512 (the executor's and the plan's rule)."""
    return max(1, min(512, int(budget_bytes // max(per_row, 1))))


def graph_bytes_per_row(seq_len: int, d_model: int, d_mlp: int, n_heads: int, d_head: int, n_layers: int,
                        past: int = 0) -> int:
    """What a forward kept for a backward holds for one prompt, fp32: every block's saved tensors
    (norm inputs, q/k/v/z, the attention pattern, the MLP's gate, up, activation and product).
    A forward without a graph holds one block at a time (activation_bytes_per_row); with a graph
    all n_layers stay alive, which on Gemma-3-270m is ~25 MB a row for 15 tokens (measured: a
    114-row batch raised the peak RSS by 3 GB when sized by the one-block formula).
    `past`: a forward of seq_len positions continued after the keys and values of `past` earlier ones
    (runtime/kv.py): its queries' scores and pattern cover them, and every block holds their keys and
    values (as given, joined to the forward's own, and expanded to every head)."""
    per_token_block = 12 * d_model + 4 * n_heads * d_head + 5 * d_mlp + 3 * n_heads * (seq_len + past)
    return 4 * n_layers * (seq_len * per_token_block + past * 6 * n_heads * d_head)


def graph_row_bytes(shape, seq_len: int) -> int:
    """graph_bytes_per_row for a model shape (models/shapes.py): what an analysis whose forwards keep a
    graph for a backward declares (`graph_bytes_per_row=` in its registration)."""
    return graph_bytes_per_row(seq_len, shape.d_model, shape.d_mlp, shape.n_heads, shape.d_head, shape.n_layers)


def widest_forward(pairs) -> int:
    """Tokens of the widest forward a run feeds the model: the longest prompt, clean or corrupted; with
    continuation answers, a prompt followed by its longer continuation (longest_row)."""
    widest = 1
    for pair in pairs:
        for prompt in (pair.clean.ids, pair.corrupted.ids):
            width = longest_row([prompt], [pair.answers], [pair.foils]) if pair.continuation else len(prompt)
            widest = max(widest, width)
    return widest


def longest_row(prompts, *continuation_sets) -> int:
    """The widest forward of these prompts, each followed by its longest continuation of the sets but
    that continuation's last token (token i is read at position final + i: runtime/continuation.py)."""
    return max(len(p) + max(len(c[i]) for c in continuation_sets) - 1 for i, p in enumerate(prompts))


def estimate(spec, plan, vocab_size: Optional[int], max_tokens: int) -> Dict[str, Any]:
    """`max_tokens`: the widest forward (widest_forward of the dataset's pairs)."""
    from ..core.registry import REGISTRY as kinds

    shape = model_shape(spec.model)
    if shape is None or (shape.vocab is None and vocab_size is None):
        return {"note": "model sizes unknown before loading (no config.json found); run it once to cache them"}
    shape = shape.with_vocab(vocab_size)
    params = shape.parameters()
    dtype = spec.model.dtype
    per_row = activation_bytes_per_row(max_tokens, shape.d_model, shape.d_mlp, shape.n_heads)
    if isinstance(plan.batch_size, int):
        rows = plan.batch_size
    else:
        budget = (plan.memory_gb or CPU_BUDGET_GB) * 2 ** 30
        rows = rows_within(budget, per_row)
    devices = _devices(spec.model)
    out = {"parameters": params, "dtype": dtype, "weights_gb": params * BYTES[dtype] / 2 ** 30,
           "max_tokens": max_tokens, "batch_rows": rows, "activations_gb_per_batch": per_row * rows / 2 ** 30,
           "devices": devices, "sizes_from": shape.origin}
    out["weights_gb_per_device"] = out["weights_gb"] / devices
    graph = {step.id: kinds[step.kind].graph_bytes_per_row for step in plan.analyses
             if kinds[step.kind].graph_bytes_per_row is not None}
    if graph:  # forwards kept for a backward: each declares its per-row size; the widest sizes the batch
        graph_row = per_row + max(size(shape, max_tokens) for size in graph.values())
        graph_rows = rows if isinstance(plan.batch_size, int) else rows_within(budget, graph_row)
        out["backward"] = {"analyses": sorted(graph), "batch_rows": graph_rows,
                           "activations_gb_per_batch": graph_row * graph_rows / 2 ** 30}
    if plan.batch_size == "auto":
        out["note"] = ("batch 'auto': rows sized to half the free GPU memory on a GPU (shown: the CPU's "
                       f"{plan.memory_gb or CPU_BUDGET_GB:g} GB budget)")
    return out


def _devices(model) -> int:
    if isinstance(model.device_map, tuple):
        return max(1, len({str(d) for _, d in model.device_map}))
    return max(1, model.n_devices)
