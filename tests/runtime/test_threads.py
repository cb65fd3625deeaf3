"""The thread policy (runtime/threads.py) and `mi-run --threads`."""
from __future__ import annotations

import json

import pytest

from mi_dsl.runtime import threads

from tests.spec_parts import animals, spec_text


def test_requested_beats_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(2, "cpu") == {"threads": 2, "reason": "--threads"}
    assert threads.choose_threads(None, "cpu") == {"threads": 3, "reason": "OMP_NUM_THREADS"}


@pytest.mark.parametrize("cores, load, expected", [(2, 2.7, 1), (2, 0.1, 2), (2, 1.2, 1), (16, 3.0, 13),
                                                   (4, 0.0, 4), (2, 9.0, 1)])
def test_free_cores_without_a_request(monkeypatch, cores, load, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores_available", lambda: cores)
    monkeypatch.setattr(threads, "load_average", lambda: load)
    choice = threads.choose_threads(None, "cpu")
    assert choice["threads"] == expected and f"{cores} cores" in choice["reason"]


def test_gpu_keeps_the_default(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(None, "cuda")["threads"] is None


def test_mi_run_threads_is_honoured_and_recorded(tmp_path, tiny_tokenizer, cli):
    import torch

    spec = tmp_path / "t.yaml"
    spec.write_text(spec_text(f"""
        version: 1
        name: t
        model: {{source: random, architecture: gpt_neox, size: tiny, tokenizer: {tiny_tokenizer},
                 prepend_bos: true, bos_token: "<bos>", device: cpu}}
        """, animals(("cats", "dogs"), (("big", "small"),)), """
        analyses:
          - {kind: predictions}
        """))
    before = torch.get_num_threads()
    try:
        code, out, err = cli("run", spec, "--threads", "1", "--out", tmp_path / "runs", "--quiet", "--fresh")
        assert code == 0, err
        results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
        assert results["threads"]["threads"] == 1 and results["threads"]["reason"] == "--threads"
        assert results["threads"]["in_effect"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exited:  # argparse refuses it with a usage line, exit code 2
        cli("run", spec, "--threads", "0")
    assert exited.value.code == 2
