"""A value made on first use, standing in for it until then.

The run's model is one: a rerun whose every step is stored never needs it, and loading the
embedded Gemma is most of such a rerun (8 of 11 s). The session hands the executor and the
analyses' contexts a `Deferred` loaded model and unembedding; the first attribute read of either
(a forward, the model's config) loads the model, once.
"""
from __future__ import annotations

from typing import Any, Callable, Optional


class Deferred:
    """Attribute reads and writes go to `make()`'s value, made at the first of them; `then(value)`
    runs once after it is made (and after it is held, so `then` may read through this object)."""

    __slots__ = ("_make", "_then", "_value", "_made")

    def __init__(self, make: Callable[[], Any], then: Optional[Callable[[Any], None]] = None):
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_then", then)
        object.__setattr__(self, "_value", None)
        object.__setattr__(self, "_made", False)

    def deferred_value(self) -> Any:
        """The value, made now if it was not yet."""
        if not self._made:
            value = self._make()
            object.__setattr__(self, "_value", value)
            object.__setattr__(self, "_made", True)
            if self._then is not None:
                self._then(value)
        return self._value

    def deferred_made(self) -> bool:
        return self._made

    def __getattr__(self, name: str) -> Any:  # only for names this class does not define
        return getattr(self.deferred_value(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.deferred_value(), name, value)

    def __repr__(self) -> str:
        return f"Deferred({self._value!r})" if self._made else "Deferred(not made yet)"
