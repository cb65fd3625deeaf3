"""kv.exact_rest's answer kept between runs (runtime/probes.py): read back only for the same processed
weights, probe tokens and kernels; probed again otherwise, and when the store is unreadable."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.runtime import kv, probes
from mi_dsl.runtime.executor import Executor
from mi_dsl.spec.model import ModelSpec
from tests.runtime.test_models import write_tiny_gemma3_gguf


@pytest.fixture()
def loaded(tmp_path, monkeypatch):
    from mi_dsl.models import load_model

    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path / "cache"))
    file = write_tiny_gemma3_gguf(tmp_path / "tiny.gguf")
    return load_model(ModelSpec(source="gguf", path=str(file), device="cpu"), cache_root=tmp_path / "cache")


@pytest.fixture()
def probed(monkeypatch):
    """The list each real probe appends to."""
    calls = []
    real = kv.exact_rest

    def counting(model, tokens):
        calls.append(tuple(tokens.shape))
        return real(model, tokens)

    monkeypatch.setattr(kv, "exact_rest", counting)
    return calls


TOKENS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]] * 2)


def test_a_second_run_reads_the_probes_answer(loaded, probed):
    assert loaded.weights_id  # the processed weights' cache key names them
    first = probes.exact_rest(Executor(loaded), TOKENS)
    assert probed == [tuple(TOKENS.shape)] and first >= 1
    assert probes.exact_rest(Executor(loaded), TOKENS) == first  # a new run's executor
    assert len(probed) == 1
    assert probes._path().is_file()


def test_other_tokens_or_threads_probe_again(loaded, probed):
    probes.exact_rest(Executor(loaded), TOKENS)
    probes.exact_rest(Executor(loaded), TOKENS[:, :6])
    assert len(probed) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads != 1 else 2)
    try:
        probes.exact_rest(Executor(loaded), TOKENS)
    finally:
        torch.set_num_threads(threads)
    assert len(probed) == 3
    probes.exact_rest(Executor(loaded), TOKENS)
    assert len(probed) == 3


def test_an_unreadable_store_is_probed_again_and_rewritten(loaded, probed):
    path = probes._path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    value = probes.exact_rest(Executor(loaded), TOKENS)
    assert len(probed) == 1
    assert probes._read(path) and value == probes.exact_rest(Executor(loaded), TOKENS) and len(probed) == 1


def test_weights_without_a_cache_key_are_probed_every_run(loaded, probed):
    loaded.weights_id = None  # random weights, a device map, processing off
    probes.exact_rest(Executor(loaded), TOKENS)
    probes.exact_rest(Executor(loaded), TOKENS)
    assert len(probed) == 2
    assert not probes._path().exists()
