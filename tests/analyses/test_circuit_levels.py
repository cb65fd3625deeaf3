"""Node, neuron and merged q/k/v circuits (MIB's levels), near-ties at cuts and per-slot stability,
on tiny random models with random norm weights and biases (tests/circuit_models.py)."""
from __future__ import annotations

import textwrap

import pytest
import torch

from mi_dsl.analyses._circuit.circuits import prune
from mi_dsl.analyses._circuit.faithfulness import circuit_metrics
from mi_dsl.analyses._circuit.graph import Graph
from mi_dsl.analyses._circuit.scores import score_edges
from mi_dsl.analyses._circuit.ties import near_ties
from mi_dsl.analyses._circuit.units import Units
from mi_dsl.running import run_spec
from tests.analyses.test_circuit_analysis import SPEC
from tests.analyses.test_circuit_engine import Setup, run_circuit


def output_hook(graph, node: int):
    """Where a node's output joins the residual stream in the plain model (no post-norms: gpt2)."""
    if node == 0:
        return "blocks.0.hook_resid_pre"
    layer, offset = divmod(node - 1, graph.n_heads + 1)
    return f"blocks.{layer}.hook_mlp_out" if offset == graph.n_heads else f"blocks.{layer}.hook_attn_out"


@pytest.fixture(scope="module")
def gpt2():
    s = Setup("gpt2")
    s.result = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=4, neurons=True)
    return s


def test_node_and_neuron_scores_are_the_gradient_at_the_nodes_output(gpt2):
    s, g = gpt2, gpt2.graph
    nodes = Units(g, "node").item_scores(s.result.scores)
    neurons = Units(g, "neuron").item_scores(s.result.scores, s.result.neurons)
    torch.testing.assert_close(neurons.sum(1), nodes, rtol=1e-4, atol=1e-6)
    corrupted, clean = s.plain_outputs(s.corrupted), s.plain_outputs(s.clean)
    for node in (0, g.head_index(0, 2), g.mlp_index(0), g.head_index(1, 3)):
        delta = corrupted[node] - clean[node]
        eps = torch.zeros(delta.shape[-1], requires_grad=True)  # one per output dimension
        hooks = [(output_hook(g, node), lambda a, hook, delta=delta, eps=eps: a + delta * eps)]
        s.plain_metric(s.clean, hooks).mean().backward()
        torch.testing.assert_close(neurons[node], eps.grad, rtol=1e-3, atol=1e-6)
        assert float(eps.grad.abs().max()) > 1e-4


def test_a_neuron_circuit_ablates_the_dropped_dimensions_of_its_nodes(gpt2):
    s, g = gpt2, gpt2.graph
    units = Units(g, "neuron")
    mask = g.edge_mask()
    d = s.model.d_model
    everything = torch.ones(g.n_forward, d, dtype=torch.bool)
    full, empty = circuit_metrics(s.model, s.clean, s.corrupted, [mask, mask], neuron_masks=[everything, ~everything])
    with torch.no_grad():
        assert full == pytest.approx(float(s.plain_metric(s.clean).mean()), abs=1e-5)
        assert empty == pytest.approx(float(s.plain_metric(s.corrupted).mean()), abs=1e-5)
    # all of one MLP's dimensions kept but the first eight: its output carries the corrupted values there
    node = g.mlp_index(0)
    kept = everything.clone()
    kept[node, :8] = False
    got = circuit_metrics(s.model, s.clean, s.corrupted, [mask], neuron_masks=[kept])[0]
    delta = s.plain_outputs(s.corrupted)[node] - s.plain_outputs(s.clean)[node]
    delta[..., 8:] = 0
    with torch.no_grad():
        expected = float(s.plain_metric(s.clean, [(output_hook(g, node), lambda a, hook: a + delta)]).mean())
    assert got == pytest.approx(expected, abs=1e-5) and abs(expected - full) > 1e-4
    kept_edges, neurons = units.circuit(s.result.neurons, 40, "abs")
    assert torch.equal(kept_edges, prune(g, kept_edges)) and neurons.sum() <= 40


def test_node_circuits_keep_every_edge_out_of_a_kept_node(gpt2):
    s, g = gpt2, gpt2.graph
    units = Units(g, "node")
    items = units.item_scores(s.result.scores)
    kept, _ = units.circuit(items, 4, "abs")
    top = torch.sort(items.abs(), descending=True, stable=True).indices[:4]
    chosen = torch.zeros(g.n_forward, dtype=torch.bool)
    chosen[top] = True
    assert torch.equal(kept, prune(g, g.edge_mask() & chosen[:, None]))


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_merged_qkv_edges_partition_the_graph_and_sum_their_parts(architecture):
    s = Setup(architecture)
    g = s.graph
    units = Units(g, "edge", merge_qkv=True)
    scores = score_edges(s.model, s.clean, s.corrupted, "eap", batch_size=4).scores
    items = units.item_scores(scores)
    names = units.item_names()
    per_layer_heads = g.n_heads if g.group_size == 1 else g.n_kv_heads
    expected = sum((1 + l * (g.n_heads + 1)) * (per_layer_heads + 1) + (0 if g.parallel_attn_mlp else g.n_heads)
                   for l in range(g.n_layers)) + g.n_forward
    assert len(names) == units.n_items(0) == expected
    assert float(items.sum()) == pytest.approx(float(scores.sum()), rel=1e-4)
    head = g.head_index(0, 1)
    parts = [g.input_slice(1, "q").start + h for h in range(g.n_heads) if h // g.group_size == 0]
    parts += [g.input_slice(1, "k").start, g.input_slice(1, "v").start]
    label = "a1.h0" if g.group_size == 1 else "a1.g0"
    assert float(items[names.index(f"a0.h1->{label}")]) == pytest.approx(float(scores[head, parts].sum()), rel=1e-5)
    kept, _ = units.circuit(items, 6, "abs")
    assert torch.equal(run_circuit(s, kept), run_circuit(s, prune(g, kept)))


def test_near_ties_count_both_sides_of_the_cut():
    units = Units(Graph(1, 2, 2), "node")
    items = torch.tensor([5.0, 3.0, 2.0 + 1e-7, 2.0, 2.0 - 1e-7, 1.0])
    tie = near_ties(units, items, 3, "abs", 1e-5)
    assert (tie["kept_within"], tie["dropped_within"]) == (1, 2) and tie["threshold"] == pytest.approx(2.0)
    clear = near_ties(units, items, 2, "abs", 1e-5)
    assert (clear["kept_within"], clear["dropped_within"]) == (0, 0)


LEVELS_SPEC = SPEC.replace("""    methods: [eap, eap_ig_inputs, exact]
    steps: 3
    keep_percent: 20
    stability: {bootstrap: 2}
    mib: {task: ioi}""", """    methods: [eap, eap_ig_activations]
    steps: 2
    level: LEVEL
    keep_percent: 30
    stability: {bootstrap: 2, by_slot: io}
    mib: {task: ioi}""")


@pytest.mark.parametrize("level", ["node", "neuron"])
def test_levels_run_from_a_spec_with_their_own_curves_stability_and_export(tmp_path, level):
    from tests.analyses.mib_reader import load_graph_from_json

    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(LEVELS_SPEC.replace("LEVEL", level)))
    outcome = run_spec(path, progress=False)
    data = outcome.results["analyses"]["circ"]
    items = 11 if level == "node" else 11 * data["graph"]["d_model"]
    assert data["level"] == level and data["items"] == items
    for method in ("eap", "eap_ig_activations"):
        m = data["methods"][method]
        assert len(m["item_scores"]) == items and m["curve"]["unit"] == level
        assert m["curve"]["requested"] == [int(k / 100 * items) for k in m["curve"]["levels_percent"]]
        assert m["curve"]["series"]["abs"]["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
        loaded = load_graph_from_json(outcome.run_dir / "mib" / f"{'EAP' if method == 'eap' else 'EAP-IG-activations'}"
                                      f"_patching_{level}" / "ioi_gemma3-tiny" / "importances.json")
        assert (loaded["nodes_scores"] if level == "node" else loaded["neurons_scores"]) is not None
    groups = data["stability"]["by_slot"]["groups"]
    assert {g["group"] for g in groups} <= {"Mary", "John", "Alice", "Bob"} and len(groups) >= 2
    assert sum(g["pairs"] for g in groups) == data["pairs"]["count"] and all("cpr" in g for g in groups)
    assert data["stability"]["cpr_spread"] is not None
    assert "per io Jaccard" in data["summary"]
