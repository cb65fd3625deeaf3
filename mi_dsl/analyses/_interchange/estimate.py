"""The plan's DAS estimate for one interchange step (torch-free; the arithmetic is causal/cost.py)."""
from __future__ import annotations

from typing import Any, Dict, Optional


def estimate(params, prepared) -> Optional[Dict[str, Any]]:
    from ...causal.cost import das_cost
    from ...compile.memory import widest_forward
    from ...models.sources import model_shape

    if params.featurizer != "das" or params.subspace or prepared.dataset is None:
        return None
    shape = model_shape(prepared.spec.model)
    if shape is None:
        return None
    dims = shape.with_vocab(prepared.tokenizer.vocab_size).as_dims()
    n = _examples(prepared, params)
    layers = sorted(set(params.layers or range(dims["layers"])))
    per_layer = len(params.positions) * len(params.variables)
    if "z" in params.components:
        per_layer *= dims["heads"]  # every head unless `heads` narrows it: an upper bound
    training = dict(params.training or {})
    seq_len = widest_forward(prepared.dataset.pairs)
    total = {"seconds": 0.0, "memory_gb": 0.0}
    for layer in layers:
        cost = das_cost(dims, n, seq_len, layer, epochs=training.get("epochs", 10),
                        batch_size=training.get("batch_size", 32), test_fraction=training.get("test_fraction", 0.3),
                        trainings=per_layer * len(params.components), vocabulary=params.iia_over == "vocabulary",
                        hooks=len(params.components))
        total["seconds"] += cost["seconds"]
        total["memory_gb"] = max(total["memory_gb"], cost["memory_gb"])
    return {**total, "examples": n, "tokens": seq_len, "layers": layers, "sizes_from": dims["origin"],
            "note": "every epoch assumed to run; at most one example per final pair (before a keep step's cut)"}


def _examples(prepared, params) -> int:
    """An upper bound of the examples: the final pairs the pipeline can leave (a keep step only cuts)."""
    count = len(prepared.dataset.pairs)
    for step in prepared.plan.pipeline:
        if step.kind == "sample":
            count = min(count, step.params.n)
        elif step.kind == "symmetric" and step.params.enabled:
            count *= 2
    if params.max_pairs:
        count = min(count, params.max_pairs)
    return count
