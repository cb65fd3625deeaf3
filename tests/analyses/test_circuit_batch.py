"""How many prompt pairs the circuit analysis scores a pass (_circuit/run.py `_batch_size`).

On a CPU a pass is compute-bound: 16 pairs, as the golden files recorded. On a GPU a pass costs its
operator launches (~136,000 a batch on Gemma-3-270m) more than its arithmetic, so it takes as many pairs
as its memory budget holds (an H200 run of 1,000 pairs in batches of 16 took 78 s, the bare forwards
and backwards 2.3 s)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mi_dsl.analyses._circuit.graph import Graph
from mi_dsl.analyses._circuit.run import _batch_size
from mi_dsl.models.shapes import GEMMA3_270M as G
from mi_dsl.runtime.executor import Executor

GRAPH = Graph(G.n_layers, G.n_heads, G.n_kv_heads)


def _run(device: str, memory_gb: float):
    cfg = SimpleNamespace(d_model=G.d_model, n_heads=G.n_heads, d_head=G.d_head, d_mlp=G.d_mlp, n_layers=G.n_layers)
    loaded = SimpleNamespace(bridge=SimpleNamespace(cfg=cfg), device=torch.device(device))
    return SimpleNamespace(cfg=cfg, device=torch.device(device), executor=Executor(loaded, memory_gb=memory_gb))


def test_a_cpu_scores_sixteen_pairs_a_pass_whatever_its_memory():
    assert _batch_size(_run("cpu", 64), GRAPH, 15) == 16
    assert _batch_size(_run("cpu", 0.25), GRAPH, 15) == 16      # 0.25 GiB / 14 MB a row: 19


def test_a_gpu_scores_as_many_pairs_a_pass_as_its_memory_budget_holds():
    # One Gemma-3-270m row of 15 tokens (91 node outputs of d 640): five [S, F, d] fp32 copies 17,472,000 bytes,
    # the graph kept for the backward 4*15*18*(12*640 + 4*4*256 + 5*2048 + 3*4*15) = 23,971,680, one block's
    # activations 4*15*(10*640 + 2*2048 + 3*4*15) = 640,560: 42,084,240 bytes a row.
    assert _batch_size(_run("cuda", 8), GRAPH, 15) == 8 * 2 ** 30 // 42_084_240 == 204
    assert _batch_size(_run("cuda", 0.5), GRAPH, 15) == 12
    assert _batch_size(_run("cuda", 1000), GRAPH, 15) == 512       # rows_within's bound


def test_scores_and_curves_do_not_depend_on_the_batch():
    """A GPU and a CPU batch differently: per-pair sums must not care (tiny Gemma-shaped model with random norms)."""
    from mi_dsl.analyses._circuit.faithfulness import baselines
    from mi_dsl.analyses._circuit.scores import score_edges
    from tests.analyses.test_circuit_engine import Setup

    s = Setup("gemma3", n=6)
    with torch.no_grad():
        scores = {b: score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=3, batch_size=b).scores
                  for b in (1, 4, 6)}
        base = {b: baselines(s.model, s.clean, s.corrupted, batch_size=b) for b in (1, 4, 6)}
    scale = scores[6].abs().max()
    assert scale > 0
    for b in (1, 4):
        assert torch.allclose(scores[b], scores[6], rtol=1e-5, atol=1e-6 * float(scale)), b
        assert base[b].full == pytest.approx(base[6].full, rel=1e-5, abs=1e-6)
        assert base[b].empty == pytest.approx(base[6].empty, rel=1e-5, abs=1e-6)


def test_a_batch_that_runs_out_of_memory_is_split_and_the_numbers_hold(monkeypatch):
    """A GPU's default batch is an estimate: a batch over the memory is halved and run again, and a
    failed batch adds nothing (scores, baselines and mean outputs equal a run that never failed)."""
    from mi_dsl.analyses._circuit import engine
    from mi_dsl.analyses._circuit.faithfulness import baselines
    from mi_dsl.analyses._circuit.scores import mean_outputs, score_edges
    from tests.analyses.test_circuit_engine import Setup

    s = Setup("gemma3", n=6)
    with torch.no_grad():
        expected = score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=2, batch_size=6).scores
        expected_base = baselines(s.model, s.clean, s.corrupted, batch_size=6)
        with s.model.split_inputs():
            expected_mean = mean_outputs(s.model, s.corrupted, 6)

    run = engine.GraphModel.run
    grad_runs = []

    def fails_mid_batch(self, tokens, job, grad=False):
        # a batch over 2 pairs runs its first gradient pass (which adds to the batch's sums), then fails
        if len(tokens) > 2 and grad:
            grad_runs.append(len(tokens))
            if len(grad_runs) % 2 == 0:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run(self, tokens, job, grad)

    def fails_at_once(self, tokens, job, grad=False):
        if len(tokens) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run(self, tokens, job, grad)

    told = []
    s.model.on_split = told.append
    with torch.no_grad():
        monkeypatch.setattr(engine.GraphModel, "run", fails_mid_batch)
        split = score_edges(s.model, s.clean, s.corrupted, "eap_ig_inputs", steps=2, batch_size=6).scores
        monkeypatch.setattr(engine.GraphModel, "run", fails_at_once)
        base = baselines(s.model, s.clean, s.corrupted, batch_size=6)
        with s.model.split_inputs():
            mean = mean_outputs(s.model, s.corrupted, 6)
    assert grad_runs[:2] == [6, 6] and "retrying with 3" in told[0]
    # batches of 3, 2 and 1 instead of 6: float32 batching noise only
    assert torch.allclose(split, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert (base.full, base.empty) == pytest.approx((expected_base.full, expected_base.empty), rel=1e-5, abs=1e-6)
    assert torch.allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)

    def no_memory(self, tokens, job, grad=False):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(engine.GraphModel, "run", no_memory)
    from mi_dsl.errors import RunError
    with pytest.raises(RunError, match="out of memory on a single prompt pair"):
        score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=4)
