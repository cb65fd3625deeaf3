"""Python's cyclic garbage collector during a start (models/environment.py).

Issue 26.4: a warm start of the embedded Gemma ran seven full collections over the objects the
imports and the load made (0.8 s of a 7 s start). A load now runs with the collector off, a run
freezes what the load made and turns it back on, and everything is as it was once the run ends."""
from __future__ import annotations

import gc

import pytest

from mi_dsl.models.environment import collector_paused


@pytest.fixture
def passes():
    """The number of frozen objects at the start of each pass of the collector."""
    counted = []

    def count(phase, info):
        if phase == "start":
            counted.append(gc.get_freeze_count())
    gc.callbacks.append(count)
    try:
        yield counted
    finally:
        gc.callbacks.remove(count)


def test_a_model_load_runs_with_the_collector_off(monkeypatch):
    import mi_dsl.models as models
    from tests.runtime.test_models import tiny

    seen = []
    boot = models.boot_bridge

    def booting(*args, **kwargs):
        seen.append(gc.isenabled())
        return boot(*args, **kwargs)
    monkeypatch.setattr(models, "boot_bridge", booting)
    assert gc.isenabled()
    models.load_model(tiny("gemma3"))
    assert seen == [False] and gc.isenabled()


def test_the_run_collector_freezes_the_load_and_gives_it_back():
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with collector_paused() as loaded:
        assert not gc.isenabled()
        made = [{"layer": i} for i in range(1000)]
        loaded()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    del made


def test_a_failed_run_gives_the_collector_back():
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("the load")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with collector_paused() as loaded:
            loaded()
            raise RuntimeError("an analysis")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_turned_off_by_the_caller_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        with collector_paused() as loaded:
            loaded()
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_whole_run_leaves_the_collector_as_it_found_it(tmp_path, passes):
    from mi_dsl.running import run_spec
    from tests.runtime.test_device_map import write

    run_spec(write(tmp_path), out_dir=str(tmp_path / "runs"), progress=False)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert any(frozen > 0 for frozen in passes)  # the analyses ran with it on, the load frozen
