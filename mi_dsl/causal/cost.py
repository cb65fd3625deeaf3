"""`mi-run plan`'s estimate of DAS training: time and memory, from the model's shape (no torch).

A training step runs the site's layer to the end on a minibatch (prefix reuse) and back again to
the rotation: the backward computes input gradients only (the weights are frozen), about one more
forward, and through the unembedding of the whole vocabulary when IIA reads it. Per epoch the
validation examples run forward once; after training, the test and training examples are scored;
before it, the source prompts and the base prompts' residual at the site's layer are captured once.
Time is that arithmetic at a measured rate: CPU_FLOPS, calibrated by benchmarks/das_gemma.py on the
shared 2-core development machine (one thread; CPU time, i.e. an unloaded core's wall-clock); every
epoch is assumed to run (early stopping only shortens it). Memory: the minibatch's graph
(compile/memory.graph_bytes_per_row for the layers run) and the captured inputs (every position of
each hook the sites read, float32).
"""
from __future__ import annotations

from typing import Any, Dict

# Achieved float32 FLOP/s of DAS on Gemma-3-270m (forward and backward from L9, batch 32, one thread),
# calibrated on one run of benchmarks/das_gemma.py on the development machine: 4.61e12 FLOPs (this
# arithmetic) in 70.1 s of the process's CPU time (benchmarks/results/das-cpu-gemma-3-270m-2026-12-03.md;
# its wall-clock was 241 s: other sessions held the cores). One configuration: not yet checked on others.
CPU_FLOPS = 6.6e10
# Input gradients of frozen weights: about the forward's matrix products once more.
BACKWARD_FACTOR = 1.0


def layer_flops_per_token(d: Dict[str, Any], seq_len: int) -> float:
    """Multiply-adds x 2 of one block for one token: projections, MLP, attention scores and mixing."""
    hidden, head_dim = d["hidden"], d["head_dim"]
    projections = hidden * head_dim * (d["heads"] + 2 * d["kv_heads"]) + d["heads"] * head_dim * hidden
    mlp = (3 if d["gated"] else 2) * hidden * d["intermediate"]
    attention = 2 * d["heads"] * head_dim * seq_len
    return 2.0 * (projections + mlp + attention)


def das_cost(dims: Dict[str, Any], n_examples: int, seq_len: int, layer: int, *, epochs: int, batch_size: int,
             test_fraction: float, trainings: int, vocabulary: bool, hooks: int = 1,
             flops_per_second: float = CPU_FLOPS) -> Dict[str, Any]:
    """Seconds and GB of `trainings` DAS trainings (sites x variables) at `layer` on n_examples."""
    from ..compile.memory import graph_bytes_per_row

    n_test = max(1, round(test_fraction * n_examples))
    n_train = n_examples - n_test
    n_val = max(1, n_train // 5) if n_train >= 5 else 0
    n_fit = n_train - n_val
    rest = dims["layers"] - layer
    unembed = 2.0 * dims["hidden"] * (dims["vocab"] if vocabulary else 4)
    forward = rest * seq_len * layer_flops_per_token(dims, seq_len) + unembed       # one example, from `layer`
    full = dims["layers"] * seq_len * layer_flops_per_token(dims, seq_len) + unembed  # one example, every layer
    train = trainings * epochs * (n_fit * forward * (1 + BACKWARD_FACTOR) + n_val * forward)
    score = trainings * (n_test + n_fit) * forward
    capture = 3 * n_examples * full                      # sources, base residuals, the unintervened base run
    flops = train + score + capture
    graph = batch_size * graph_bytes_per_row(seq_len, dims["hidden"], dims["intermediate"], dims["heads"],
                                             dims["head_dim"], rest)
    logits = 3 * 4 * batch_size * (dims["vocab"] if vocabulary else 4)            # logits, softmax, gradient
    inputs = 4 * n_examples * seq_len * dims["hidden"] * (hooks + 1)
    return {"seconds": flops / flops_per_second, "flops": flops, "memory_gb": (graph + logits + inputs) / 2 ** 30,
            "examples": n_examples, "train": n_fit, "validation": n_val, "test": n_test, "epochs": epochs,
            "trainings": trainings, "layer": layer, "tokens": seq_len, "flops_per_second": flops_per_second}
