"""runtime/deferred.py: the value a run makes on first use (its model, its unembedding)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mi_dsl.runtime.deferred import Deferred


def test_made_once_at_the_first_read_then_told_once():
    made, told = [], []
    value = Deferred(lambda: made.append(1) or SimpleNamespace(width=3), then=lambda v: told.append(v.width))
    assert not value.deferred_made() and made == []
    assert value.width == 3 and value.width == 3
    assert made == [1] and told == [3] and value.deferred_made()
    value.width = 5                                  # writes go to the value too
    assert value.deferred_value().width == 5


def test_then_may_read_through_the_deferred_value():
    box = {}
    value = Deferred(lambda: SimpleNamespace(width=3), then=lambda v: box.setdefault("seen", value.width))
    value.deferred_value()
    assert box == {"seen": 3}


def test_a_failed_make_is_tried_again_at_the_next_read():
    tries = []

    def make():
        tries.append(1)
        if len(tries) == 1:
            raise OSError("not yet")
        return SimpleNamespace(width=1)
    value = Deferred(make)
    with pytest.raises(OSError):
        value.deferred_value()
    assert not value.deferred_made()
    assert value.width == 1 and len(tries) == 2
