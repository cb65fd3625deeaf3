"""Work the circuit analysis shares between its passes, on tiny random models with random norm weights
and biases (tests/circuit_models.py): the corrupted prompts captured once (_circuit/engine.py
`GraphModel.capture`), and circuit-ablated forwards that skip the positions before the first differing
token (_circuit/faithfulness.py `first_position`).

Under patching ablation every node's ablated value at a position where each clean prompt equals its
corrupted prompt is the clean run's own, so a circuit-ablated forward can run positions p.. only after
the corrupted capture's keys and values of positions < p. The numbers must be a full recomputation's
(the same model with `kv_rest = 0` runs every position) on Gemma-3 (post-attention norms, grouped-query
attention), Pythia (GPT-NeoX: parallel attention and MLP, rotary) and GPT-2 (learned positions, biases)."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.analyses._circuit.engine import GraphModel, Pass
from mi_dsl.analyses._circuit.faithfulness import baselines, circuit_metrics, first_position
from mi_dsl.analyses._circuit.scores import score_edges
from tests.analyses.test_circuit_engine import Setup

ARCHS = [pytest.param("gemma3", id="gemma3-gqa4:1"), pytest.param("gpt_neox", id="neox-parallel"),
         pytest.param("gpt2", id="gpt2-biases")]
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


def whole(s: Setup) -> GraphModel:
    """The same model running every position of every forward."""
    model = GraphModel(s.bridge, s.graph, s.metric)
    model.kv_rest = 0
    return model


@pytest.mark.parametrize("architecture", ARCHS)
def test_circuits_measured_from_the_first_differing_position_equal_a_full_recomputation(architecture):
    s = differing_late(architecture)
    edges, neurons = circuits_of(s)
    start = first_position(s.model, s.clean, s.corrupted, "patching")
    assert 0 < start <= DIFFER_FROM  # no later than the first difference; kv.exact_rest may ask for more positions
    continued = circuit_metrics(s.model, s.clean, s.corrupted, edges, neuron_masks=neurons)
    full_model = whole(s)
    full = circuit_metrics(full_model, s.clean, s.corrupted, edges, neuron_masks=neurons)
    assert s.model.tokens_skipped > 0 and full_model.tokens_skipped == 0
    assert max(abs(a - b) for a, b in zip(full, full[1:])) > 1e-3  # the circuits differ, so the check can fail
    for a, b in zip(continued, full):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6 * max(abs(x) for x in full))


@pytest.mark.parametrize("architecture", ARCHS)
def test_the_curve_and_baselines_run_fewer_positions(architecture):
    """Every circuit-ablated forward runs positions start.. only: the input node's output, read by a
    hook on the bridge, has LENGTH - start positions (the corrupted capture all LENGTH)."""
    s = differing_late(architecture)
    edges, _ = circuits_of(s)
    start = first_position(s.model, s.clean, s.corrupted, "patching")
    seen = []
    point = s.bridge.blocks[0].hook_resid_pre
    handle = point.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape[:2])))
    try:
        circuit_metrics(s.model, s.clean, s.corrupted, edges)
    finally:
        handle.remove()
    assert seen[0] == (4, LENGTH)  # the corrupted prompts' capture: every position
    assert seen[1:] == [(4, LENGTH - start)] * len(edges) and LENGTH - start < LENGTH
    assert s.model.tokens_skipped == len(edges) * 4 * start


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_ablation_run_every_position_and_keep_their_numbers(ablation):
    """Mean and zero ablation change the positions before the first difference too: they run whole,
    and each circuit's number is the mean over the pairs of one ablated forward of every position."""
    s = differing_late("gemma3")
    edges, _ = circuits_of(s)
    assert first_position(s.model, s.clean, s.corrupted, ablation) == 0
    measured = circuit_metrics(s.model, s.clean, s.corrupted, edges, ablation=ablation)
    assert s.model.tokens_skipped == 0
    mask = s.graph.edge_mask()
    with s.model.split_inputs(), torch.no_grad():
        if ablation == "mean":
            off = s.model.run(s.corrupted, Pass(s.rows)).outputs.mean(0, keepdim=True).expand(4, -1, -1, -1)
        else:
            off = torch.zeros(4, LENGTH, s.graph.n_forward, s.model.d_model)
        for value, kept in zip(measured, edges):
            job = s.model.run(s.clean, Pass(s.rows, capture_outputs=False, off=off.clone(),
                                            complement=(mask & ~kept).float()))
            assert value == pytest.approx(float(job.metric.double().mean()), rel=1e-5, abs=1e-6)


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
    # baselines: the empty circuit (the full one is the scoring's clean run: _circuit/plain.py); circuits:
    # the distinct ones but the full; the second scoring: its gradient run only
    full = sum(bool(torch.equal(e, s.graph.edge_mask())) for e in edges)
    assert full == 1
    assert s.model.forwards == 2 + 1 + (len(edges) - full) + 1 and s.model.captures_reused == 3


@pytest.mark.parametrize("method", ["eap", "eap_ig_inputs", "clean_corrupted"])
def test_the_full_circuit_is_the_clean_run_a_scoring_method_ran(method):
    """Every edge kept is a plain forward of the clean prompts, which each method runs: its metric is read
    back (no forward), and it is the number the full circuit's own forward gives."""
    s = differing_late("gemma3")
    mask = s.graph.edge_mask()
    score_edges(s.model, s.clean, s.corrupted, method, steps=2, batch_size=8)
    before = s.model.forwards
    [full] = circuit_metrics(s.model, s.clean, s.corrupted, [mask], batch_size=8)
    assert s.model.forwards == before
    fresh = GraphModel(s.bridge, s.graph, s.metric)
    [measured] = circuit_metrics(fresh, s.clean, s.corrupted, [mask], batch_size=8)
    assert fresh.forwards == 2  # the corrupted capture and the full circuit's forward
    assert full == pytest.approx(measured, rel=1e-6, abs=1e-7)
    assert abs(full - float(s.plain_metric(s.corrupted).detach().mean())) > 1e-3  # not the corrupted run's


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
