"""Circuit-ablated forwards that do not compute the layers whose inputs keep no edge (_circuit/skipping.py),
on tiny random models with random norm weights and biases (tests/circuit_models.py).

Under patching ablation such a layer computes what the corrupted run computed, so it writes the corrupted
capture's values instead. Every circuit's number must be the one a forward computing every layer gives
(`skip_layers = False`), on Gemma-3 (post-attention and post-MLP norms write the residual stream, grouped-query
attention), Llama (grouped-query), Pythia (GPT-NeoX: parallel attention and MLP) and GPT-2 (biases)."""
from __future__ import annotations

import pytest
import torch

from mi_dsl.analyses._circuit.circuits import prune, top_edges
from mi_dsl.analyses._circuit.engine import GraphModel
from mi_dsl.analyses._circuit.faithfulness import circuit_metrics
from mi_dsl.analyses._circuit.scores import score_edges
from mi_dsl.analyses._circuit.skipping import Writers, skipped_layers, writers_of
from mi_dsl.errors import RunError
from tests.analyses.test_circuit_engine import Setup
from tests.analyses.test_circuit_shared_work import differing_late

ARCHS = [pytest.param("gemma3", id="gemma3-gqa4:1"), pytest.param("llama", id="llama-gqa3:1"),
         pytest.param("gpt_neox", id="neox-parallel"), pytest.param("gpt2", id="gpt2-biases")]


def computing_every_layer(s: Setup) -> GraphModel:
    model = GraphModel(s.bridge, s.graph, s.metric)
    model.skip_layers = False
    return model


def small_circuits(s: Setup):
    """The top 1, 3, 8 and 20 edges by EAP score, pruned (as a faithfulness curve's first levels), the
    empty circuit, and every edge into one layer's MLP and the logits (the other layers keep nothing)."""
    scores = score_edges(s.model, s.clean, s.corrupted, "eap").scores
    circuits = [prune(s.graph, top_edges(s.graph, scores, n, "abs")) for n in (1, 3, 8, 20)]
    mask = s.graph.edge_mask()
    one_mlp = torch.zeros_like(mask)
    one_mlp[:, s.graph.input_slice(0, "m")] = True
    one_mlp[:, s.graph.logits_index] = True
    return circuits + [torch.zeros_like(mask), one_mlp & mask]


@pytest.mark.parametrize("architecture", ARCHS)
def test_skipping_layers_gives_every_layers_numbers(architecture):
    s = differing_late(architecture)
    circuits = small_circuits(s)
    skipped = circuit_metrics(s.model, s.clean, s.corrupted, circuits)
    every = computing_every_layer(s)
    full = circuit_metrics(every, s.clean, s.corrupted, circuits)
    assert s.model.layers_skipped > 0 and every.layers_skipped == 0
    assert max(full) - min(full) > 1e-3  # the circuits differ, so the check can fail
    scale = max(abs(x) for x in full)
    for a, b in zip(skipped, full):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6 * scale)


@pytest.mark.parametrize("architecture", ARCHS)
def test_a_skipped_layer_runs_no_attention_or_mlp(architecture):
    """The hook points inside a layer's attention (its z) and MLP (its input) fire exactly in the layers
    whose inputs keep an edge of the circuit."""
    s = differing_late(architecture)
    circuit = small_circuits(s)[1]
    attention, mlps = skipped_layers(s.graph, (s.graph.edge_mask() & ~circuit).float())
    assert attention and mlps and len(attention) < s.graph.n_layers * 2  # something is skipped, not everything
    circuit_metrics(s.model, s.clean, s.corrupted, [circuit])  # the corrupted capture, kept: every layer runs
    fired: dict = {"attn": set(), "mlp": set()}
    handles = []
    for layer, block in enumerate(s.bridge.blocks):
        handles.append(block.attn.hook_z.register_forward_hook(
            lambda module, args, out, layer=layer: fired["attn"].add(layer)))
        handles.append(block.mlp.hook_in.register_forward_hook(
            lambda module, args, out, layer=layer: fired["mlp"].add(layer)))
    try:
        circuit_metrics(s.model, s.clean, s.corrupted, [circuit])  # the capture reused: one ablated forward
    finally:
        for handle in handles:
            handle.remove()
    every = set(range(s.graph.n_layers))
    assert fired["attn"] == every - set(attention)
    assert fired["mlp"] == every - set(mlps)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_ablation_compute_every_layer(ablation):
    """A node whose inputs are all ablated reads the mean (or zero) inputs, and its output is not the
    mean (zero) output: nothing is skipped."""
    s = differing_late("gemma3")
    circuit_metrics(s.model, s.clean, s.corrupted, small_circuits(s)[:2], ablation=ablation)
    assert s.model.layers_skipped == 0


def test_the_empty_circuit_is_the_corrupted_run_without_computing_a_layer():
    s = differing_late("gemma3")
    empty = torch.zeros_like(s.graph.edge_mask())
    [value] = circuit_metrics(s.model, s.clean, s.corrupted, [empty])
    assert s.model.layers_skipped == 2 * s.graph.n_layers
    corrupted = float(s.plain_metric(s.corrupted).detach().mean())
    assert value == pytest.approx(corrupted, rel=1e-5, abs=1e-6)


def test_a_model_whose_writers_do_not_run_is_refused_not_miscomputed():
    """If a block called its attention another way, the replaced modules would not run: the pass says so."""
    s = differing_late("gemma3")
    stand_in = torch.nn.Identity()
    s.model._writers = [Writers(stand_in, stand_in, stand_in, stand_in)] * s.graph.n_layers
    with pytest.raises(RunError, match="skipped 0 of"):
        circuit_metrics(s.model, s.clean, s.corrupted, [torch.zeros_like(s.graph.edge_mask())])


def test_an_unknown_block_layout_computes_every_layer():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.Identity()  # no hook_attn_out written by it

    class Bridge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block()])

    assert writers_of(Bridge()) is None
    assert writers_of(Setup("gemma3").bridge) is not None
