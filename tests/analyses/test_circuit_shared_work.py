"""The corrupted prompts captured once per circuit analysis (_circuit/engine.py `GraphModel.capture`),
on a tiny random Gemma-3 with random norm weights and biases (tests/circuit_models.py)."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.analyses._circuit.engine import GraphModel
from mi_dsl.analyses._circuit.faithfulness import baselines, circuit_metrics
from mi_dsl.analyses._circuit.scores import score_edges
from tests.analyses.test_circuit_engine import Setup

DIFFER_FROM = 4  # the first position where a corrupted prompt differs from its clean prompt
LENGTH = 10


def differing_late(architecture: str) -> Setup:
    """4 pairs of 10 tokens whose corrupted prompts differ from position 4 on (one pair only at 4)."""
    s = Setup(architecture, n=4, length=LENGTH)
    gen = torch.Generator().manual_seed(11)
    s.corrupted = s.clean.clone()
    s.corrupted[0, DIFFER_FROM] = (s.clean[0, DIFFER_FROM] + 1 - 3) % 297 + 3  # another token in 3 .. 299
    s.corrupted[1:, DIFFER_FROM + 1:DIFFER_FROM + 3] = torch.randint(3, 300, (3, 2), generator=gen)
    return s


def circuits_of(s: Setup):
    """Circuits from empty to full, and a neuron circuit (its ablation reads every parent: the other path)."""
    mask = s.graph.edge_mask()
    gen = torch.Generator().manual_seed(3)
    edges = [mask & (torch.rand(mask.shape, generator=gen) < f) for f in (0.0, 0.03, 0.3, 0.8, 1.0)]
    neurons = torch.rand(s.graph.n_forward, s.model.d_model, generator=gen) < 0.5
    return edges + [mask & (torch.rand(mask.shape, generator=gen) < 0.5)], [None] * len(edges) + [neurons]


def test_the_corrupted_prompts_run_once_for_scoring_baselines_and_circuits():
    """One batch holds every pair: the corrupted prompts' capture is taken by the first pass (here the
    scoring) and every later pass reads it; a method's `forwards` still counts it (reused)."""
    s = differing_late("gemma3")
    edges, _ = circuits_of(s)
    scored = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=8)
    assert (scored.forwards, scored.captures_reused, s.model.forwards) == (2, 0, 2)  # the capture, the gradient run
    baselines(s.model, s.clean, s.corrupted, batch_size=8)
    circuit_metrics(s.model, s.clean, s.corrupted, edges, batch_size=8)
    again = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=8)
    assert (again.forwards, again.captures_reused) == (2, 1)
    assert torch.equal(again.scores, scored.scores)
    # baselines: full and empty; circuits: the distinct ones; the second scoring: its gradient run only
    assert s.model.forwards == 2 + 2 + len(edges) + 1 and s.model.captures_reused == 3


def test_several_batches_capture_their_corrupted_prompts_in_each_pass():
    """With several batches keeping every batch's capture would add one [B, S, F, d] tensor a batch to
    each pass's memory, which the batch rule does not count: each pass captures its own, as before."""
    s = differing_late("gemma3")
    edges, _ = circuits_of(s)
    one_batch = circuit_metrics(s.model, s.clean, s.corrupted, edges, batch_size=4)
    model = GraphModel(s.bridge, s.graph, s.metric)
    two_batches = circuit_metrics(model, s.clean, s.corrupted, edges, batch_size=3)
    circuit_metrics(model, s.clean, s.corrupted, edges[:1], batch_size=3)
    assert model.captures_reused == 0 and model.kept is None
    assert model.forwards == 2 * (1 + len(edges)) + 2 * (1 + 1)
    for a, b in zip(two_batches, one_batch):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
