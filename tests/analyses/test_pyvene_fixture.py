"""mi-dsl's interchange against pyvene's numbers (tests/analyses/fixtures/pyvene_interchange.json).

pyvene ran in its own environment (benchmarks/pyvene/compare.py; CI never builds it) on the
plain-transformers GPT-2 of tests/analyses/pyvene_model.py, rebuilt here from the same seed (its
checksum must match), on the examples mi-dsl makes from the same spec (the fixture holds them;
they must match too). Then:
  - full-vector interchange at the residual stream entering each layer (pyvene's block_input), at the
    size's and the final position: every example's candidate logits within 1e-5;
  - DAS, one site, k = 2, the same initial rotation, optimiser, loss and minibatch order: each
    epoch's training and validation loss within 3e-4 relative, the learned W within 2e-3, the test
    IIA equal. Measured when the fixture was made: losses 2.8e-5 (training) and 5.2e-5
    (validation) relative, W 1.4e-4: the two forwards (Hugging Face's GPT-2 under pyvene's hooks,
    TransformerBridge under mi-dsl's) sum floats in other orders (the first loss, before any
    update, already differs by 1e-5), and four epochs of Adam carry that drift; a wrong
    intervention or gradient moves the losses by far more (the loss falls 38% over the epochs).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.analyses.pyvene_model import DAS, FULL, SPEC, build, checksum
from tests.word_tokenizer import word_tokenizer_file

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pyvene_interchange.json"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from mi_dsl.compile import prepare
    from mi_dsl.compile.compiler import compile_analysis
    from mi_dsl.analyses.registry import REGISTRY, load_all
    from mi_dsl.runtime.run import run_context

    folder = tmp_path_factory.mktemp("pyvene")
    model = build()
    fixture = json.loads(FIXTURE.read_text())
    assert checksum(model) == fixture["model_checksum"], "the model is not the one pyvene ran"
    model.save_pretrained(folder / "model")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(path=folder / "model", tokenizer=word_tokenizer_file()))
    run = run_context(prepare(str(spec)))
    load_all()
    results = {}
    for params in (FULL, DAS):
        compiled = compile_analysis(run.spec, dict(params)).params
        with torch.no_grad():
            results[params["id"]] = REGISTRY["interchange"].implementation().compute(compiled, run).data
    return fixture, results, run


def test_the_examples_are_the_ones_pyvene_ran(compared):
    fixture, results, run = compared
    assert results["full"]["examples"] == len(fixture["inputs"]["examples"]) == 72
    assert [list(p.clean.ids) for p in run.pairs] == [e["base"] for e in fixture["inputs"]["examples"]]
    assert [list(p.corrupted.ids) for p in run.pairs] == [e["source"] for e in fixture["inputs"]["examples"]]
    assert results["das"]["split"]["test"] == len(fixture["inputs"]["split"]["test"])


def test_full_vector_interchange_equals_pyvene(compared):
    fixture, results, run = compared
    examples = fixture["inputs"]["examples"]
    data = results["full"]
    for site, rows in fixture["full_vector"].items():
        layer, position = site.split()
        theirs = torch.tensor(rows, dtype=torch.float64)
        label = torch.tensor([e["candidates"].index(e["label"]) for e in examples])
        margin = theirs[torch.arange(len(label)), label] - theirs[torch.arange(len(label)), 1 - label]
        column = data["grid_axes"]["resid_pre"]["columns"].index(position)
        mine = data["logit_diff"]["d"]["resid_pre"][int(layer[1:])][column]
        assert mine == pytest.approx(float(margin.mean()), abs=1e-5), site
        assert margin.abs().max() > 0.05, "the interchange must move the logits for this to test"
        hits = float((margin > 0).double().mean())
        assert data["iia"]["d"]["resid_pre"][int(layer[1:])][column] == pytest.approx(hits, abs=1e-12), site


def test_full_vector_candidate_logits_equal_pyvene_example_by_example(compared):
    """The engine's own readout (every example's candidate logits), not only the means."""
    from mi_dsl.analyses._interchange.engine import prepare
    from mi_dsl.analyses._interchange.evaluate import Job, evaluate
    from mi_dsl.analyses._interchange.settings import Settings
    from mi_dsl.analyses._interchange.sites import columns, sites
    from mi_dsl.analyses._interchange.score import Targets
    from mi_dsl.causal import Builder, SourceRule, load_causal_model
    from mi_dsl.compile.compiler import compile_analysis

    fixture, _, run = compared
    params = compile_analysis(run.spec, dict(FULL)).params
    settings = Settings.of(params)
    causal, reader = load_causal_model(run.spec)
    examples = Builder(causal, reader, run.tokenizer).examples(run.pairs, SourceRule("corrupted"))
    cols = columns(settings, examples, run)
    found = sites(settings, params, run, len(cols))
    targets = Targets.of(examples, ["d"])
    with torch.no_grad():
        logits, _ = evaluate(run, prepare(run, examples, cols, found), [Job(s) for s in found],
                             torch.arange(len(examples)), targets.candidates, False)
    for i, site in enumerate(found):
        theirs = torch.tensor(fixture["full_vector"][f"L{site.layer} {cols[site.column].label}"])
        assert torch.allclose(logits[i], theirs, atol=1e-5, rtol=0), site


def test_das_equals_pyvene_within_the_stated_tolerance(compared):
    fixture, results, _ = compared
    theirs, mine = fixture["das"], results["das"]
    (curve,) = mine["training"]
    assert curve["epochs_run"] == len(theirs["train_loss"]) == DAS["training"]["epochs"]
    assert curve["train_loss"] == pytest.approx(theirs["train_loss"], rel=3e-4)
    assert curve["val_loss"] == pytest.approx(theirs["val_loss"], rel=3e-4)
    assert theirs["train_loss"][-1] < theirs["train_loss"][0], "training must move the loss for this to test"
    from tests.analyses.test_interchange import saved_W

    W = saved_W(mine)
    assert torch.allclose(W, torch.tensor(theirs["W"]), atol=2e-3)
    assert mine["iia"]["d"]["resid_pre"][0][0] == theirs["test_iia"]
