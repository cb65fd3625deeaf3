"""The spec's model block: `ModelSpec` (declared in models/model_spec.py) and where a loading
fault points in the spec. Each source's facts (fields, tokenizer, shape, loader) are declared
once in models/sources.py."""
from __future__ import annotations

from ..errors import Location
from ..models.model_spec import KNOWN_BOS, ModelSpec, Processing  # noqa: F401  (the spec's model block)
from ..models.sources import SOURCES


def fault_location(spec) -> Location:
    """The field of a resolved Spec that a model-loading fault is about (its source's field, when given)."""
    source = SOURCES.get(spec.model.source)
    field = source.fault_field if source else None
    return spec.loc("model", field) if field and field in spec.data["model"] else spec.loc("model", "source")
