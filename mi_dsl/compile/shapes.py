"""Validate-time checks of selectors against the model's shape and the tokenized prompts (no torch).

`layers: [30]`, `L25H9` or `positions: 40` used to pass validate and fail after the model
loaded. The model's shape (layers, heads, key/value heads) comes from its source without
weights (models/sources.py: the embedded models' stated shapes, a random preset's, a local
or cached config.json). Position selectors are evaluated on every
tokenized prompt of the dataset when a tokenizer is available.
"""
from __future__ import annotations

from typing import Optional

from ..models.shapes import ModelShape

from ..errors import ExpressionError, SpecMeaningError

def check_model_shape(spec, plan, shape: Optional[ModelShape]) -> None:
    """`layers` and the compiled head selectors of every analysis, against the model's shape."""
    if shape is None:
        return
    from ..expr import Env

    def table(name):  # a stand-in of the right shape: only a ranking's count is checked here
        return [[0.0] * shape.n_heads for _ in range(shape.n_layers)]

    for index, step in enumerate(plan.analyses):
        for path, layer in step.params.layer_indices():  # what the analysis's parameters say are layers
            if isinstance(layer, int) and layer >= shape.n_layers:
                raise SpecMeaningError(
                    f"layer {layer} is out of range: the model has {shape.n_layers} layers (0 to "
                    f"{shape.n_layers - 1}; {shape.origin})", spec.loc("analyses", index, *path))
        for selector in _selections(step, "heads"):  # top(x, 500) on 72 heads: refused now
            selector.compiled.evaluate(Env(n_layers=shape.n_layers, n_heads=shape.n_heads, result=table))


def check_positions(spec, plan, dataset) -> None:
    """Every compiled position selector of every analysis resolves in every tokenized clean prompt."""
    if dataset is None or not dataset.pairs or "prompts" not in spec.data:
        return
    from ..expr import Env

    prompts = [p.clean for p in dataset.pairs]
    for step in plan.analyses:
        for selector in _selections(step, "positions"):
            for prompt in prompts:
                try:
                    selector.compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans))
                except ExpressionError as err:
                    raise SpecMeaningError(f"{err.message} (in the prompt '{prompt.text}')",
                                           err.location, hint=err.hint) from None


def _selections(step, kind: str):
    """The compiled selectors of a plan step's parameters of one kind ("heads" or "positions")."""
    for selection in step.params.selections().values():
        if selection.kind == kind:
            yield from selection


def check_prompt_indices(spec, plan, dataset) -> None:
    """`attention.prompts: [40]` or `predictions.index: 40` beyond the most prompts the pipeline
    can leave (exact until a keep-condition; then an upper bound) fail for sure: refuse now."""
    if dataset is None or "prompts" not in spec.data:
        return
    from ..core.registry import REGISTRY

    most = len(dataset.pairs)
    for step in plan.pipeline:
        if step.kind == "sample":
            most = min(most, step.params.n)
        elif step.kind == "symmetric" and step.params.enabled:
            most = 2 * most
    for index, raw in enumerate(spec.analyses):
        params = REGISTRY[raw["kind"]].params.from_spec(raw)  # as written: a default index is never checked
        for path, value in params.prompt_indices():  # what the analysis's parameters say index prompts
            if path[0] in raw and isinstance(value, int) and value >= most:
                raise SpecMeaningError(f"prompt {value} does not exist: the pipeline leaves at most {most} prompt "
                                       f"pairs (0 to {most - 1})", spec.loc("analyses", index, *path))
