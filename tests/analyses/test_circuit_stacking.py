"""Circuits stacked in one circuit-ablated forward (_circuit/faithfulness.py, sparse.py `Stacked`), on tiny
random models with random norm weights and biases (tests/circuit_models.py).

Edge circuits whose passes skip the same layers run several to a forward, each on its own block of rows.
Each circuit's number must be the one its own forward gives, on Gemma-3 (post-norms, grouped-query
attention), Llama, Pythia (parallel attention and MLP) and GPT-2 (biases); passes with circuits that skip
different layers compute the layers any of them needs."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.analyses._circuit.engine import GraphModel
from mi_dsl.analyses._circuit.faithfulness import _stacked_metric, circuit_metrics, first_position
from mi_dsl.analyses._circuit.skipping import skipped_layers
from tests.analyses.test_circuit_shared_work import circuits_of, differing_late
from tests.analyses.test_circuit_skipping import ARCHS, small_circuits


def fresh(s, stack_rows: int) -> GraphModel:
    model = GraphModel(s.bridge, s.graph, s.metric)
    model.stack_rows = stack_rows
    return model


@pytest.mark.parametrize("architecture", ARCHS)
def test_stacked_circuits_give_each_circuit_its_own_forwards_number(architecture):
    """From the empty circuit to the full one, a neuron circuit among them (never stacked): the same
    numbers one circuit a forward and up to eight a forward, in fewer forwards."""
    s = differing_late(architecture)
    edges, neurons = circuits_of(s)
    circuits = small_circuits(s) + edges
    neuron_masks = [None] * len(small_circuits(s)) + neurons
    alone, stacked = fresh(s, 0), fresh(s, 8 * len(s.clean))
    one = circuit_metrics(alone, s.clean, s.corrupted, circuits, neuron_masks=neuron_masks)
    many = circuit_metrics(stacked, s.clean, s.corrupted, circuits, neuron_masks=neuron_masks)
    assert max(one) - min(one) > 1e-3  # the circuits differ, so a circuit given another's rows shows
    scale = max(abs(x) for x in one)
    for a, b in zip(many, one):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7 * scale)
    assert stacked.forwards < alone.forwards and stacked.layers_skipped > 0


def test_a_stack_holds_at_most_stack_rows():
    """stack_rows of two batches: every ablated forward holds at most two circuits."""
    s = differing_late("gemma3")
    edges, _ = circuits_of(s)
    model = fresh(s, 2 * len(s.clean))
    seen = []
    run = model.run

    def counting(tokens, job, grad=False):
        if job.complements is not None:
            seen.append((len(job.complements), tokens.shape[0]))
        return run(tokens, job, grad)
    model.run = counting
    circuit_metrics(model, s.clean, s.corrupted, edges[1:4] + [e.clone() for e in edges[1:4]][::-1])
    assert seen and all(k <= 2 and rows == k * len(s.clean) for k, rows in seen)
    assert any(k == 2 for k, _ in seen)


@pytest.mark.parametrize("architecture", ["gemma3", "gpt_neox"])
def test_circuits_that_skip_different_layers_compute_what_any_of_them_needs(architecture):
    """Stacked by hand (faithfulness groups only circuits that skip the same layers): the pass skips the
    layers none of them keeps an edge into, and each circuit's number is its own forward's up to
    rounding (a layer one of them would skip is computed rather than read from the corrupted run)."""
    s = differing_late(architecture)
    model = fresh(s, 0)
    small, larger = small_circuits(s)[0], small_circuits(s)[3]
    mask = s.graph.edge_mask()
    complements = [(mask & ~c).float() for c in (small, larger)]
    skips = [skipped_layers(s.graph, c) for c in complements]
    assert skips[0] != skips[1]
    start = first_position(model, s.clean, s.corrupted, "patching")
    with model.split_inputs(), torch.no_grad():
        capture = model.capture(s.corrupted, s.rows, keep=True, keys=start > 0)
        off, off_attn = capture.outputs[:, start:], capture.attn_out[:, start:]
        alone = [_stacked_metric(model, s.clean, s.rows, off, [c], start, capture.past, off_attn)[0]
                 for c in complements]
        before = model.layers_skipped
        both = _stacked_metric(model, s.clean, s.rows, off, complements, start, capture.past, off_attn)
    both_skip = [sorted(set(a) & set(b)) for a, b in zip(*skips)]
    assert model.layers_skipped - before == 2 * (len(both_skip[0]) + len(both_skip[1]))  # counted per circuit
    assert not torch.allclose(alone[0], alone[1])
    for a, b in zip(both, alone):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_stacked_circuits_under_mean_and_zero_ablation(ablation):
    """No layer is skipped there, so every edge circuit may share a pass: the same numbers as alone."""
    s = differing_late("gemma3")
    edges, _ = circuits_of(s)
    alone, stacked = fresh(s, 0), fresh(s, 8 * len(s.clean))
    one = circuit_metrics(alone, s.clean, s.corrupted, edges, ablation=ablation)
    many = circuit_metrics(stacked, s.clean, s.corrupted, edges, ablation=ablation)
    assert max(one) - min(one) > 1e-3
    scale = max(abs(x) for x in one)
    for a, b in zip(many, one):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7 * scale)
    assert stacked.forwards < alone.forwards and stacked.layers_skipped == 0
