"""`mi-run plan`'s memory estimate: will the model and a batch fit, before loading anything?

Torch-free: sizes come from the model's config.json (a local directory, the Hugging Face
cache, mi-dsl's converted copy of a GGUF) or a random model's preset. Parameters are
counted from the shapes (embeddings, attention with grouped key/value heads, a gated or
plain MLP, norms): an estimate, typically within a few percent. Activations per row use
the executor's own batch-sizing formula, so "fits" here means fits there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GATED = ("llama", "gemma", "gemma2", "gemma3", "gemma3_text", "mistral", "qwen2", "qwen3", "phi3", "olmo2")
# The executor's default batch budget on a CPU. 1 GB: a forward without a graph fills its
# 512-row cap well under it on small models, and a forward kept for a backward (attribution
# patching) stays within it: the syllogism run's peak RSS was 4.9 GB with 2 GB sized by a
# one-block estimate, and 3.0 GB with this budget and graph_bytes_per_row (same time).
CPU_BUDGET_GB = 1.0


# Analyses whose forwards keep a graph for a backward (every block's saved tensors per row) and are
# batched by the memory budget (the circuit engine batches at most 16 prompts).
BACKWARD_KINDS = ("attribution_patching",)


def activation_bytes_per_row(seq_len: int, d_model: int, d_mlp: int, n_heads: int) -> int:
    """Live activations of one block for one prompt (residual copies, MLP hidden, attention scores), fp32."""
    return 4 * seq_len * (10 * d_model + 2 * d_mlp + 3 * n_heads * seq_len)


def rows_within(budget_bytes: float, per_row: int) -> int:
    """Prompts per batch that fit the budget: at least 1, at most 512 (the executor's and the plan's rule)."""
    return max(1, min(512, int(budget_bytes // max(per_row, 1))))


def graph_bytes_per_row(seq_len: int, d_model: int, d_mlp: int, n_heads: int, d_head: int, n_layers: int) -> int:
    """What a forward kept for a backward holds for one prompt, fp32: every block's saved tensors
    (norm inputs, q/k/v/z, the attention pattern, the MLP's gate, up, activation and product).
    A forward without a graph holds one block at a time (activation_bytes_per_row); with a graph
    all n_layers stay alive, which on Gemma-3-270m is ~25 MB a row for 15 tokens (measured: a
    114-row batch raised the peak RSS by 3 GB when sized by the one-block formula)."""
    per_token_block = 12 * d_model + 4 * n_heads * d_head + 5 * d_mlp + 3 * n_heads * seq_len
    return 4 * seq_len * n_layers * per_token_block


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
    dims = model_dims(spec.model, vocab_size)
    if dims is None:
        return {"note": "model sizes unknown before loading (no config.json found); run it once to cache them"}
    params = parameter_count(dims)
    dtype = spec.model.dtype
    per_row = activation_bytes_per_row(max_tokens, dims["hidden"], dims["intermediate"], dims["heads"])
    if isinstance(plan.batch_size, int):
        rows = plan.batch_size
    else:
        budget = (plan.memory_gb or CPU_BUDGET_GB) * 2 ** 30
        rows = rows_within(budget, per_row)
    devices = _devices(spec.model)
    out = {"parameters": params, "dtype": dtype, "weights_gb": params * BYTES[dtype] / 2 ** 30,
           "max_tokens": max_tokens, "batch_rows": rows, "activations_gb_per_batch": per_row * rows / 2 ** 30,
           "devices": devices, "sizes_from": dims["origin"]}
    out["weights_gb_per_device"] = out["weights_gb"] / devices
    backward = sorted({step.id for step in plan.analyses if step.kind in BACKWARD_KINDS})
    if backward:
        graph_row = per_row + graph_bytes_per_row(max_tokens, dims["hidden"], dims["intermediate"], dims["heads"],
                                                  dims["head_dim"], dims["layers"])
        graph_rows = rows if isinstance(plan.batch_size, int) else rows_within(budget, graph_row)
        out["backward"] = {"analyses": backward, "batch_rows": graph_rows,
                           "activations_gb_per_batch": graph_row * graph_rows / 2 ** 30}
    if plan.batch_size == "auto":
        out["note"] = ("batch 'auto': rows sized to half the free GPU memory on a GPU (shown: the CPU's "
                       f"{plan.memory_gb or CPU_BUDGET_GB:g} GB budget)")
    return out


def parameter_count(d: Dict[str, Any]) -> int:
    hidden, head_dim = d["hidden"], d["head_dim"]
    attention = hidden * head_dim * (d["heads"] + 2 * d["kv_heads"]) + d["heads"] * head_dim * hidden
    mlp = (3 if d["gated"] else 2) * hidden * d["intermediate"]
    embeddings = d["vocab"] * hidden * (1 if d["tied"] else 2) + d.get("positions", 0) * hidden
    return int(embeddings + d["layers"] * (attention + mlp + 4 * hidden) + 2 * hidden)


def model_dims(model, vocab_size: Optional[int]) -> Optional[Dict[str, Any]]:
    if model.source == "random":
        from ..runtime.models.random_weights import SHAPES

        shape = SHAPES.get(model.architecture, {}).get(model.size)
        dims = getattr(getattr(shape, "make_config", None), "dims", None)  # a test's own shape may have none
        if dims is None or vocab_size is None:
            return None
        return dict(dims, vocab=shape.fixed_vocab or vocab_size,
                    origin=f"random preset {model.architecture}/{model.size}")
    config = _config_file(model)
    if config is None:
        if model.source == "embedded":  # the same shapes as the embedded model's random preset
            from ..runtime.models.random_weights import SHAPES

            if model.name == "smollm2-135m":
                shape, origin = SHAPES["llama"]["smollm2-135m"], "SmolLM2-135M's shapes"
            else:
                shape, origin = SHAPES["gemma3"]["gemma-3-270m"], "Gemma-3-270m's shapes"
            return dict(shape.make_config.dims, vocab=shape.fixed_vocab, origin=origin)
        return None
    return _dims_from_config(json.loads(config.read_text()), str(config))


def _config_file(model) -> Optional[Path]:
    if model.source == "local" and model.path:
        path = Path(model.path) / "config.json"
        return path if path.is_file() else None
    if model.source == "pretrained" and model.name:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.name, "config.json")
        except Exception:  # an invalid id is simply not cached
            return None
        return Path(found) if isinstance(found, str) else None
    return None


def _dims_from_config(c: Dict[str, Any], origin: str) -> Optional[Dict[str, Any]]:
    c = c.get("text_config", c)
    hidden = c.get("hidden_size") or c.get("n_embd")
    layers = c.get("num_hidden_layers") or c.get("n_layer")
    heads = c.get("num_attention_heads") or c.get("n_head")
    if not (hidden and layers and heads and c.get("vocab_size")):
        return None
    return {"hidden": hidden, "layers": layers, "heads": heads,
            "kv_heads": c.get("num_key_value_heads") or heads, "head_dim": c.get("head_dim") or hidden // heads,
            "intermediate": c.get("intermediate_size") or c.get("n_inner") or 4 * hidden,
            "gated": c.get("model_type") in GATED, "tied": c.get("tie_word_embeddings", True),
            "positions": c.get("n_positions", 0) if c.get("model_type") == "gpt2" else 0,
            "vocab": c["vocab_size"], "origin": origin}


def _devices(model) -> int:
    if isinstance(model.device_map, tuple):
        return max(1, len({str(d) for _, d in model.device_map}))
    return max(1, model.n_devices)
