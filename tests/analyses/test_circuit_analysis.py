"""The `circuit` analysis end to end on a tiny random Gemma-3 (grouped-query, post-norms):
the spec runs, the report carries curves, graph, tables and the MIB export, the export
reads back to the same scores and circuit, and bad inputs get located errors."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from mi_dsl.analyses._circuit import mib
from mi_dsl.analyses._circuit.graph import Graph
from mi_dsl.errors import FileAccessError, MiError
from mi_dsl.running import run_spec

SPEC = """
version: 1
name: circuit
model: {source: random, architecture: gemma3, size: tiny, seed: 3, prepend_bos: true}
vocabularies:
  names: {items: [Mary, John, Alice, Bob], filter: 'ntokens(" " + item) == 1'}
prompts:
  template: "When {io} and {s} went out, {s} gave it to"
  slots: {io: names, s: names}
  where: 'io != s'
  answer: 'first_token(" " + io)'
  foil: 'first_token(" " + s)'
  corrupt: {template: "When {io} and {s} went out, {io} gave it to"}
  equal_lengths: true
metric: logit_diff
analyses:
  - kind: circuit
    id: circ
    methods: [eap, eap_ig_inputs, exact]
    steps: 3
    keep_percent: 20
    stability: {bootstrap: 2}
    mib: {task: ioi}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("circuit")
    path = folder / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC))
    outcome = run_spec(path, progress=False)
    return outcome


def test_circuit_result_has_scores_curve_comparison_stability(finished):
    data = finished.results["analyses"]["circ"]
    assert data["graph"]["edges"] == 68 and data["graph"]["n_kv_heads"] == 1
    for method in ("eap", "eap_ig_inputs", "exact"):
        m = data["methods"][method]
        assert len(m["scores"]) == 68 and "a0.h1->a1.g0<k>" in m["scores"]  # named edges
        assert m["curve"]["series"]["abs"]["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
        assert m["circuit_edges"] == len(m["circuit"]) <= data["keep_requested"] == 13
        assert set(m["circuit"]) <= set(m["scores"])
    assert data["methods"]["eap"]["curve"]["random_cpr"] is not None
    assert {(r["a"], r["b"]) for r in data["comparison"]} == {("eap", "eap_ig_inputs"), ("eap", "exact"),
                                                             ("eap_ig_inputs", "exact")}
    assert len(data["stability"]["resamples"]) == 2
    assert "x-axis" in data["methods"]["eap"]["curve"]["area_note"] and "f = (m(C)" in data["convention"]
    curve = data["methods"]["eap"]["curve"]
    assert curve["area"] == "requested" and curve["cpr_from"] == "signed"
    assert "CPR" in finished.results["analyses"]["circ"]["summary"]
    # the envelope's pairs: which final pairs it scored (it was the integer count, not the pairs)
    n = finished.results["dataset"]["final_pairs"]
    assert data["pairs"] == {"count": n, "indices": list(range(n))}
    assert data["key_numbers"]["eap_cpr"] == data["methods"]["eap"]["curve"]["cpr"]
    # the corrupted prompts ran once (for the first method's scoring); every later pass read that capture
    assert [data["methods"][m]["captures_reused"] for m in ("eap", "eap_ig_inputs", "exact")] == [0, 1, 1]
    # circuit-ablated forwards skipped the positions before the first differing name (first_position)
    passes = data["passes"]
    assert passes["kv_reuse"] and passes["positions_skipped"] > 0 and 0 < passes["token_work_saved"] < 1


def test_report_has_figures_tables_and_the_mib_export(finished):
    run_dir = Path(finished.run_dir)
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"circ__faithfulness.html", "circ__circuit_graph.html", "circ__stability.html"} <= figures
    assert (run_dir / "tables" / "circ__top_edges.csv").is_file()
    folder = run_dir / "mib" / "EAP_patching_edge" / "ioi_gemma3-tiny"
    graph, scores, kept = mib.read_folder(folder)
    data = finished.results["analyses"]["circ"]
    names = graph.edge_names()
    expected = torch.tensor([data["methods"]["eap"]["scores"][n] for n in names])
    torch.testing.assert_close(scores[graph.edge_mask()], expected, rtol=1e-5, atol=1e-7)
    assert [names[i] for i in kept[graph.edge_mask()].nonzero().flatten().tolist()] == data["methods"]["eap"]["circuit"]
    assert "mib/EAP_patching_edge/ioi_gemma3-tiny/importances.json" in (run_dir / "index.html").read_text()


def test_mib_round_trip_and_format_rules_with_grouped_heads():
    graph = Graph(3, 6, 2)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(graph.n_forward, graph.n_backward, generator=gen) * graph.edge_mask()
    kept = (torch.rand(graph.n_forward, graph.n_backward, generator=gen) > 0.7) & graph.edge_mask()
    obj = json.loads(json.dumps(mib.to_mib(graph, scores, kept, d_model=48)))
    mib.check(obj)
    # MIB's own graph: q, k and v per query head
    assert "a1.h5->a2.h0<k>" in obj["edges"] and len(obj["edges"]) == len(mib.mib_edge_names(obj["cfg"]))
    back_graph, back_scores, back_kept = mib.from_mib(obj)
    assert back_graph.n_kv_heads == 2
    torch.testing.assert_close(back_scores, scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(back_kept, kept)
    # the group's share: a key edge of group 0 appears on heads 0, 1, 2 with a third each
    s, t = graph.head_index(0, 1), graph.input_slice(1, "k").start
    assert obj["edges"]["a0.h1->a1.h2<k>"]["score"] == pytest.approx(-float(scores[s, t]) / 3, rel=1e-5)  # MIB's sign


def test_mib_format_rules_are_enforced(tmp_path):
    graph = Graph(2, 4, 4, parallel_attn_mlp=True)
    obj = mib.to_mib(graph, torch.zeros(graph.n_forward, graph.n_backward), graph.edge_mask(), 64)
    assert "a0.h1->m0" not in obj["edges"]  # parallel: a layer's heads do not feed its MLP
    broken = json.loads(json.dumps(obj))
    del broken["edges"]["input->logits"]
    with pytest.raises(FileAccessError, match="1 missing"):
        mib.check(broken)
    broken = json.loads(json.dumps(obj))
    broken["edges"]["input->m0"]["score"] = "high"
    with pytest.raises(FileAccessError, match="finite float"):
        mib.check(broken)
    bad = tmp_path / "ioi_gpt2_extra"
    bad.mkdir()
    with pytest.raises(FileAccessError, match="one underscore"):
        mib.read_folder(bad)


def test_unequal_lengths_are_refused_at_the_analysis(tmp_path):
    text = textwrap.dedent(SPEC).replace("equal_lengths: true", "equal_lengths: false").replace(
        'corrupt: {template: "When {io} and {s} went out, {io} gave it to"}',
        'corrupt: {template: "When {io} and {s} went out today, {io} gave it to"}')
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(MiError) as info:
        run_spec(path, progress=False)
    message = str(info.value)
    assert "spec.yaml:" in message and "tokens" in message


def test_non_differentiable_metric_is_refused_at_compile(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC).replace("metric: logit_diff", "metric: rank"))
    with pytest.raises(MiError, match="rank is a count with no gradient"):
        run_spec(path, progress=False)


def test_mib_export_reads_back_through_mibs_own_loader(finished):
    """Each exported file loads as MIB's loader loads it (tests/analyses/mib_reader.py, written from
    EAP-IG's Graph.from_json), with MIB's per-query-head key/value edges summing to mi-dsl's group edge."""
    from tests.analyses.mib_reader import backward_index, forward_index, load_graph_from_json

    run_dir = Path(finished.run_dir)
    data = finished.results["analyses"]["circ"]
    graph = Graph(2, 4, 1)
    for method, folder in (("eap", "EAP"), ("eap_ig_inputs", "EAP-IG-inputs"), ("exact", "exact")):
        loaded = load_graph_from_json(run_dir / "mib" / f"{folder}_patching_edge" / "ioi_gemma3-tiny"
                                      / "importances.json")
        assert len(loaded["edge_names"]) == 12 * 1 + 5 + 12 * 6 + 10 + 11  # MIB's graph: q, k, v per query head
        scores = data["methods"][method]["scores"]
        for name, score in scores.items():
            parent, child = name.split("->")
            if "<k>" in child or "<v>" in child:  # a3.g0<k> -> the group's query heads a3.h0..h3
                layer, letter = child.split(".")[0], child[-2]
                names = [f"{parent}->{layer}.h{h}<{letter}>" for h in range(4)]
            else:
                names = [name]
            total = sum(float(loaded["scores"][forward_index(loaded["cfg"], parent),
                                               backward_index(loaded["cfg"], n.split("->")[1])])
                        for n in names)
            assert total == pytest.approx(-score, rel=1e-5, abs=1e-7), name
        kept = {n for n in data["methods"][method]["circuit"]}
        assert int(loaded["in_graph"].sum()) == sum(4 if ("<k>" in e or "<v>" in e) else 1 for e in kept)
        assert graph.n_edges == len(scores)


def test_mibs_signed_ranking_of_an_export_is_mi_dsls_signed_ranking():
    """MIB ranks a file's scores descending (absolute=False); the export's sign makes that mi-dsl's `signed`."""
    from tests.analyses.mib_reader import backward_index, forward_index, load_graph_from_json
    from mi_dsl.analyses._circuit.circuits import top_edges

    graph = Graph(3, 4, 4)
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(graph.n_forward, graph.n_backward, generator=gen) * graph.edge_mask()
    obj = mib.to_mib(graph, scores, torch.zeros_like(graph.edge_mask()), d_model=16)
    path = Path(__import__("tempfile").mkdtemp()) / "importances.json"
    path.write_text(json.dumps(obj))
    loaded = load_graph_from_json(path)
    by_name = {n: float(loaded["scores"][forward_index(loaded["cfg"], n.split("->")[0]),
                                         backward_index(loaded["cfg"], n.split("->")[1])])
               for n in loaded["edge_names"]}
    for n in (5, 40, 200):
        mib_top = set(sorted(by_name, key=lambda e: -by_name[e])[:n])
        ours = top_edges(graph, scores, n, "signed")
        names = graph.edge_names()
        assert mib_top == {names[i] for i in ours[graph.edge_mask()].nonzero().flatten().tolist()}


def test_node_and_neuron_exports_carry_mibs_node_fields():
    from tests.analyses.mib_reader import forward_index, load_graph_from_json

    graph = Graph(2, 4, 4)
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(graph.n_forward, graph.n_backward, generator=gen) * graph.edge_mask()
    nodes = torch.randn(graph.n_forward, generator=gen)
    neuron_scores = torch.randn(graph.n_forward, 8, generator=gen)
    neurons = neuron_scores > 0.5
    obj = mib.to_mib(graph, scores, graph.edge_mask(), 8, nodes, neurons, neuron_scores)
    path = Path(__import__("tempfile").mkdtemp()) / "importances.json"
    path.write_text(json.dumps(obj))
    loaded = load_graph_from_json(path)
    order = [forward_index(loaded["cfg"], n) for n in graph.forward_names]
    torch.testing.assert_close(loaded["nodes_scores"][order], -nodes)
    torch.testing.assert_close(loaded["neurons_scores"][order], -neuron_scores)
    assert torch.equal(loaded["neurons_in_graph"][order], neurons)
