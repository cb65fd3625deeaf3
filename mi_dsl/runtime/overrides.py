"""Replace an attribute of some modules for the duration of a block, and put back what was there.

The value goes into each instance's own `__dict__`: the class is untouched, and a bridge component's
`__setattr__` (which would pass the attribute on to the wrapped transformers module) is not called.
An instance may already carry its own value (accelerate's device-map wrapper sets `forward`): it is
put back afterwards, not deleted. Users: runtime/prefix.py (blocks that pass their input through),
runtime/kv.py (the attention's key/value seam), analyses/_circuit/skipping.py (layers that write a
captured value).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

_ABSENT = object()


@contextmanager
def overriding(modules: Sequence, name: str, make: Callable[[int, Any], Any]) -> Iterator[None]:
    """Within the block, `modules[i].<name>` is `make(i, modules[i])`."""
    saved = [module.__dict__.get(name, _ABSENT) for module in modules]
    for index, module in enumerate(modules):
        module.__dict__[name] = make(index, module)
    try:
        yield
    finally:
        for module, previous in zip(modules, saved):
            if previous is _ABSENT:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = previous
