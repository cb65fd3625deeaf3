"""Validate-time checks of selectors against the model's shape and the tokenized prompts (no torch).

`layers: [30]`, `L25H9` or `positions: 40` used to pass validate and fail after the model
loaded. The model's shape (layers, heads, key/value heads) comes from its config without
weights (compile/memory.py: the embedded Gemma-3-270m's known shapes, a random preset's,
a local or cached config.json). Position selectors are evaluated on every
tokenized prompt of the dataset when a tokenizer is available.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ExpressionError, SpecMeaningError

POSITION_KEYS = ("positions", "from", "to")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    origin: str  # where the numbers come from, for messages


def model_shape(model) -> Optional[ModelShape]:
    """The shape of the spec's model from its config (compile/memory.py's model_dims: the
    embedded Gemma's known shapes, a random preset's, a local or cached config.json), or None
    when it is not known offline."""
    from .memory import model_dims

    dims = model_dims(model, vocab_size=1)  # the vocabulary size plays no part here
    if dims is None:
        return None
    return ModelShape(dims["layers"], dims["heads"], dims["kv_heads"], dims["origin"])


def check_model_shape(spec, plan, shape: Optional[ModelShape]) -> None:
    """`layers` and the compiled head selectors of every analysis, against the model's shape."""
    if shape is None:
        return
    from ..expr import Env

    def table(name):  # a stand-in of the right shape: only a ranking's count is checked here
        return [[0.0] * shape.n_heads for _ in range(shape.n_layers)]

    for index, step in enumerate(plan.analyses):
        for i, layer in enumerate(step.params.get("layers") or []):
            if isinstance(layer, int) and layer >= shape.n_layers:
                raise SpecMeaningError(
                    f"layer {layer} is out of range: the model has {shape.n_layers} layers (0 to "
                    f"{shape.n_layers - 1}; {shape.origin})", spec.loc("analyses", index, "layers", i))
        for selector in _selections(step, ("heads",)):  # top(x, 500) on 72 heads: refused now
            selector.compiled.evaluate(Env(n_layers=shape.n_layers, n_heads=shape.n_heads, result=table))


def check_positions(spec, plan, dataset) -> None:
    """Every compiled position selector of every analysis resolves in every tokenized clean prompt."""
    if dataset is None or not dataset.pairs or "prompts" not in spec.data:
        return
    from ..expr import Env

    prompts = [p.clean for p in dataset.pairs]
    for step in plan.analyses:
        for selector in _selections(step, POSITION_KEYS):
            for prompt in prompts:
                try:
                    selector.compiled.evaluate(Env(n_tokens=len(prompt.ids), slot_spans=prompt.spans))
                except ExpressionError as err:
                    raise SpecMeaningError(f"{err.message} (in the prompt '{prompt.text}')",
                                           err.location, hint=err.hint) from None


def _selections(step, keys):
    """The compiled selectors of a plan step's parameters `keys` (compile/params.py)."""
    from .params import Selection

    for key in keys:
        value = step.params.get(key)
        if isinstance(value, Selection):
            yield from value


def check_prompt_indices(spec, plan, dataset) -> None:
    """`attention.prompts: [40]` or `predictions.index: 40` beyond the most prompts the pipeline
    can leave (exact until a keep-condition; then an upper bound) fail for sure: refuse now."""
    if dataset is None or "prompts" not in spec.data:
        return
    from .cost import pipeline_bound

    most = pipeline_bound(plan, len(dataset.pairs))
    for index, params in enumerate(spec.analyses):
        wanted = [("prompts", i, v) for i, v in enumerate(params.get("prompts") or [])
                  if params["kind"] == "attention" and "text" not in params]
        if params["kind"] == "predictions" and "prompt" not in params and "index" in params:
            wanted.append(("index", None, params["index"]))
        for key, i, value in wanted:
            if isinstance(value, int) and value >= most:
                where = spec.loc("analyses", index, key, i) if i is not None else spec.loc("analyses", index, key)
                raise SpecMeaningError(f"prompt {value} does not exist: the pipeline leaves at most {most} prompt "
                                       f"pairs (0 to {most - 1})", where)
