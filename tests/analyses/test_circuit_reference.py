"""mi-dsl's circuit analysis against the public code: EAP-IG's attribution and MIB's evaluation.

tests/reference/eap_ig_gpt2_tiny.json holds what EAP-IG (hannamw/EAP-IG) and MIB's
evaluate_area_under_curve (hannamw/MIB-circuit-track) computed, at the commits and versions
it records, on the tiny random GPT-2 of tests/reference/tiny_gpt2.py (random LayerNorm
weights and biases) and its IOI-style pairs; benchmarks/reference/eap_ig_reference.py made
it in its own environment (CI does not build it). Here the same model, rebuilt from its seed
(the weight checksum must match), runs through a spec as a user would write it
(`model.source: local`), and every published method must give every edge's score, the pruned
circuit at every MIB level of both rankings, each faithfulness point, CPR and CMD within 1e-5.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mi_dsl.analyses._circuit.run import graph_from_data, scores_tensor
from mi_dsl.analyses._circuit.units import Units
from mi_dsl.running import run_spec
from tests.reference import tiny_gpt2

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "reference" / "eap_ig_gpt2_tiny.json").read_text())
PUBLISHED = {"eap": "EAP", "eap_ig_inputs": "EAP-IG-inputs", "eap_ig_activations": "EAP-IG-activations",
             "clean_corrupted": "clean-corrupted", "exact": "exact"}
TOLERANCE = 1e-5

SPEC = """
version: 1
name: reference
model: {{source: local, path: "{path}", prepend_bos: true}}
vocabularies:
  names: {{items: {names}}}
prompts:
  template: "{template}"
  slots: {{io: names, s: names}}
  where: 'io != s'
  answer: 'first_token(" " + io)'
  foil: 'first_token(" " + s)'
  corrupt: {{template: "{corrupted}"}}
  equal_lengths: true
metric: logit_diff
analyses:
  - kind: circuit
    id: circ
    methods: {methods}
    steps: {steps}
    random_baseline: false
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def run(folder):
    checksum = tiny_gpt2.write_model(folder / "model")
    assert checksum == FIXTURE["model"]["checksum"], "the seeded model is not the one the reference scored"
    braces = lambda t: t.format(io="{io}", s="{s}")  # noqa: E731
    text = SPEC.format(path=folder / "model", names=json.dumps(tiny_gpt2.NAMES), template=braces(tiny_gpt2.TEMPLATE),
                       corrupted=braces(tiny_gpt2.CORRUPTED), methods=json.dumps(list(PUBLISHED)),
                       steps=FIXTURE["steps"])
    (folder / "spec.yaml").write_text(textwrap.dedent(text))
    return run_spec(folder / "spec.yaml", out_dir=str(folder / "runs"), progress=False)


def test_the_pairs_are_the_references(run):
    texts = [(p["clean"], p["corrupted"]) for p in run.results["dataset"]["pairs"]]
    assert texts == [(c, k) for c, k, _, _ in FIXTURE["pairs"]]


@pytest.mark.parametrize("method", list(PUBLISHED))
def test_every_edge_score_equals_the_published_code(run, method):
    ours = run.results["analyses"]["circ"]["methods"][method]["scores"]
    theirs = FIXTURE["methods"][PUBLISHED[method]]["scores"]
    assert set(ours) == set(theirs)  # one graph, one naming
    worst = max(abs(ours[e] + theirs[e]) for e in ours)  # the reference scores MIB's loss, -logit_diff
    assert worst <= TOLERANCE, f"{method}: largest difference {worst:.3g}"
    assert max(abs(v) for v in theirs.values()) > 100 * TOLERANCE  # the comparison can fail


@pytest.mark.parametrize("method", list(PUBLISHED))
def test_circuits_faithfulness_cpr_and_cmd_equal_mib(run, method):
    data = run.results["analyses"]["circ"]
    ours, theirs = data["methods"][method], FIXTURE["methods"][PUBLISHED[method]]
    curve = ours["curve"]
    assert curve["levels_percent"] == [p * 100 for p in FIXTURE["percentages"]]
    graph = graph_from_data(data)
    units, scores = Units(graph), scores_tensor(graph, ours["scores"])
    names = graph.edge_names()
    for ranking in ("signed", "abs"):
        series = curve["series"][ranking]
        assert series["faithfulness"] == pytest.approx(theirs[ranking]["faithfulness"], abs=TOLERANCE)
        for n, circuit in zip(curve["requested"], theirs[ranking]["circuits"]):
            kept, _ = units.circuit(scores, n, ranking)
            assert sorted(names[i] for i in kept[graph.edge_mask()].nonzero().flatten().tolist()) == circuit, \
                f"{method}, {ranking} ranking, {n} edges"
    assert curve["cpr"] == pytest.approx(theirs["cpr"], abs=TOLERANCE)
    assert curve["cmd"] == pytest.approx(theirs["cmd"], abs=TOLERANCE)


def test_no_cut_of_the_reference_falls_on_a_near_tie(run):
    """A near-tie at a cut would make the circuit comparison a coin toss; the result says where."""
    for method, m in run.results["analyses"]["circ"]["methods"].items():
        assert m["curve"]["near_ties"] == [], method


def test_midpoints_and_the_kept_area_are_not_the_published_numbers(run, folder, tmp_path):
    """The options keep mi-dsl's earlier conventions; they must not pass for the published ones."""
    text = ((folder / "spec.yaml").read_text()
            .replace(f"methods: {json.dumps(list(PUBLISHED))}", "methods: [eap_ig_inputs]")
            .replace("random_baseline: false", "random_baseline: false\n    ig_points: midpoint\n    area: kept"))
    (tmp_path / "spec.yaml").write_text(text)
    other = run_spec(tmp_path / "spec.yaml", out_dir=str(tmp_path / "runs"), progress=False,
                     allow_paths=[str(folder)])  # the reference model lies beside the first spec
    ours = other.results["analyses"]["circ"]["methods"]["eap_ig_inputs"]
    theirs = FIXTURE["methods"]["EAP-IG-inputs"]
    assert max(abs(ours["scores"][e] + theirs["scores"][e]) for e in ours["scores"]) > 100 * TOLERANCE
    assert abs(ours["curve"]["cpr"] - theirs["cpr"]) > 100 * TOLERANCE
