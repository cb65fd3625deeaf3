"""Extra random-model sizes for tests: the registered `tiny` shape of every architecture with
a wider initialisation (sharper attention, logit differences of a few units), optionally more
layers or a finishing touch on the built weights. Registered for the `with` block only."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Optional


@contextmanager
def tiny_variant(name: str, initializer_range: float = 0.2, layers: Optional[int] = None,
                 finish: Optional[Callable] = None) -> Iterator[str]:
    """Register size `name` for every random architecture while the block runs; yields the name."""
    from mi_dsl.models import random_weights

    def variant(shape):
        def make(vocab):
            config = shape.make_config(vocab)
            config.initializer_range = initializer_range
            if layers is not None:
                _set_layers(config, layers)
            return config
        dims = shape.dims if layers is None else replace(shape.dims, n_layers=layers)  # what `mi-run plan` reads
        return random_weights.Shape(shape.hub_name, make, dims, finish=finish)

    for sizes in random_weights.SHAPES.values():
        sizes[name] = variant(sizes["tiny"])
    try:
        yield name
    finally:
        for sizes in random_weights.SHAPES.values():
            sizes.pop(name, None)


def _set_layers(config, layers: int) -> None:
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(config, key):
            setattr(config, key, layers)
    if getattr(config, "layer_types", None):  # Gemma-3 lists each layer's attention type
        config.layer_types = (list(config.layer_types) * layers)[:layers]
