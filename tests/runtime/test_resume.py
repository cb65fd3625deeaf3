"""Runs resume and reproduce: a run killed with SIGKILL mid-way and rerun ends with the same
results.json as an uninterrupted run; two runs give identical numbers; --fresh recomputes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.test_runtime import tiny, write_spec

ANALYSES = """
analyses:
  - {kind: head_attribution, id: head_attr}
  - kind: logit_lens
  - kind: layer_attribution
  - {kind: predictions, top_k: 5}
"""
PIPELINE = """
pipeline:
  - keep: 'clean.logit_diff > -100'
  - sample: {n: 6, seed: 1}
  - symmetric: true
"""
# Records of the machine and the run, not results: "threads" holds the load average
# when no OMP_NUM_THREADS is set (as in CI), so it differs from run to run.
VOLATILE = ("timings", "provenance", "store", "forward_passes", "threads")


def mi_run(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mi_dsl.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def results_of(runs: Path) -> dict:
    [path] = sorted(runs.glob("t/*/results.json"))[-1:]
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def test_killed_run_resumes_to_the_same_results(tmp_path):
    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses=ANALYSES, extra=PIPELINE)
    reference = tmp_path / "reference"
    done = mi_run("run", spec, "--out", reference, "--quiet")
    assert done.wait(timeout=300) == 0, done.stderr.read()

    resumed = tmp_path / "resumed"
    store = resumed / "t" / ".store"
    victim = mi_run("run", spec, "--out", resumed, "--quiet")
    deadline = time.time() + 300
    while not list(store.glob("analysis-*.json")) and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    if victim.poll() is not None:
        pytest.fail("the run finished before it could be killed: " + victim.stderr.read())
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    finished_steps = len(list(store.glob("*.json")))  # temporary files start with '.', not matched
    assert finished_steps >= 2, "the kill lands after the dataset step and at least one analysis"
    assert not list(resumed.glob("t/*/results.json")), "the killed run must not have finished"

    rerun = mi_run("run", spec, "--out", resumed)
    assert rerun.wait(timeout=300) == 0
    log = rerun.stderr.read()
    assert "dataset step: reusing the stored result" in log
    assert results_of(resumed) == results_of(reference)
    final = json.loads(sorted(resumed.glob("t/*/results.json"))[-1].read_text())
    assert final["store"]["reused"] == finished_steps


def test_fresh_ignores_the_store_and_reproduces(tmp_path):
    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses=ANALYSES, extra=PIPELINE)
    first = mi_run("run", spec, "--out", tmp_path / "a", "--quiet")
    assert first.wait(timeout=300) == 0
    again = mi_run("run", spec, "--out", tmp_path / "a", "--fresh")
    assert again.wait(timeout=300) == 0
    assert "reusing" not in again.stderr.read()
    runs = sorted((tmp_path / "a" / "t").glob("*/results.json"))
    one, two = (json.loads(p.read_text()) for p in runs)
    assert {k: v for k, v in one.items() if k not in VOLATILE} == {k: v for k, v in two.items() if k not in VOLATILE}
    assert one["store"] == {"reused": 0, "computed": 5, "distrusted": []}  # the dataset step and four analyses
    assert two["store"] == {"reused": 0, "computed": 5, "distrusted": []}
    # a fresh run stores what it computed: the next plain run reuses the fresh results
    plain = mi_run("run", spec, "--out", tmp_path / "a")
    assert plain.wait(timeout=300) == 0
    three = json.loads(sorted((tmp_path / "a" / "t").glob("*/results.json"))[-1].read_text())
    assert three["store"] == {"reused": 5, "computed": 0, "distrusted": []}


def test_store_keys_change_when_mi_dsl_code_changes(monkeypatch):
    """A fix to an analysis must not replay a result the old code stored (same version number)."""
    from mi_dsl.runtime import store

    before = store.digest("analysis", "same inputs")
    monkeypatch.setattr(store, "code_fingerprint", lambda: "another-code-version")
    assert store.digest("analysis", "same inputs") != before


def test_a_model_saved_again_under_the_same_path_is_never_answered_from_the_store(tmp_path):
    """A checkpoint overwritten in place (same folder, new weights) once reused every stored step of
    the old weights: the same baselines, silently. The weights' fingerprint is part of the key."""
    from mi_dsl.running import run_spec
    from tests.test_continuations import local_model, local_spec

    model_dir = local_model(tmp_path, "gpt_neox", "tiny", seed=7)
    spec = local_spec(tmp_path, model_dir)

    def run():
        outcome = run_spec(spec, out_dir=str(tmp_path / "runs"), progress=False)
        results = json.loads((outcome.run_dir / "results.json").read_text())
        return results["baselines"], results["store"], results["provenance"]["model"]["fingerprint"]

    first, stored, print_1 = run()
    assert run()[:2] == (first, {"reused": 1, "computed": 0, "distrusted": []})  # unchanged: reused
    local_model(tmp_path, "gpt_neox", "tiny", seed=8)                         # new weights, same folder
    again, stored, print_2 = run()
    assert stored["reused"] == 0 and print_2 != print_1
    assert again["clean"] != pytest.approx(first["clean"], rel=1e-3)


def test_each_model_source_fingerprints_what_its_weights_are_read_from(tmp_path):
    from mi_dsl.models.model_spec import ModelSpec
    from mi_dsl.models.sources import SOURCES

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    spec = ModelSpec(source="gguf", path=str(gguf))
    before = SOURCES["gguf"].fingerprint(spec)
    gguf.write_bytes(b"GGUF" + bytes(63) + b"\x01")  # same size, other content
    assert SOURCES["gguf"].fingerprint(spec) != before

    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(8))
    spec = ModelSpec(source="local", path=str(folder))
    before = SOURCES["local"].fingerprint(spec)
    assert SOURCES["local"].fingerprint(spec) == before
    (folder / "model.safetensors").write_bytes(bytes(9))
    assert SOURCES["local"].fingerprint(spec) != before

    assert SOURCES["random"].fingerprint(ModelSpec(source="random", architecture="gpt_neox", size="tiny")) is None
    assert SOURCES["pretrained"].fingerprint(ModelSpec(source="pretrained", name="no-such/model-here")) is None
    assert SOURCES["embedded"].fingerprint(ModelSpec(source="embedded")) == \
        SOURCES["embedded"].fingerprint(ModelSpec(source="embedded", name="gemma-3-270m"))


def test_a_rerun_whose_every_step_is_stored_never_loads_the_model(tmp_path, monkeypatch, capsys):
    """Loading the model was most of such a rerun (8 of 11 s on the embedded Gemma). A rerun with one
    step changed loads it once, for that step."""
    from mi_dsl import models
    from mi_dsl.running import run_spec

    spec = write_spec(tmp_path, tiny("gpt_neox"), analyses=ANALYSES, extra=PIPELINE)

    def run(*overrides):
        outcome = run_spec(spec, overrides=list(overrides), out_dir=str(tmp_path / "runs"), progress=True)
        return json.loads((outcome.run_dir / "results.json").read_text())

    first = run()
    assert "the model was not loaded" not in capsys.readouterr().err
    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    again = run()
    assert loads == [] and again["store"] == {"reused": 5, "computed": 0, "distrusted": []}
    assert "the model was not loaded" in capsys.readouterr().err
    ran = VOLATILE + ("shared_passes",)  # what ran this time: nothing
    assert {k: v for k, v in again.items() if k not in ran} == {k: v for k, v in first.items() if k not in ran}
    model = again["provenance"]["model"]
    assert model["loaded"] is False
    assert (model["id"], model["fingerprint"]) == (first["provenance"]["model"]["id"],
                                                   first["provenance"]["model"]["fingerprint"])
    assert again["forward_passes"] == 0 and again["threads"]["threads"] is None

    changed = run("analyses.3.top_k=4")
    assert len(loads) == 1 and changed["store"] == {"reused": 4, "computed": 1, "distrusted": []}
    assert changed["provenance"]["model"]["n_layers"] == first["provenance"]["model"]["n_layers"]
    assert changed["analyses"]["head_attr"] == first["analyses"]["head_attr"]


def test_a_tokenizer_file_saved_again_is_never_answered_from_the_store(tmp_path):
    """Token strings in stored results (predictions, labels) come from the tokenizer file: its content
    is part of the key, as the weights' is."""
    import shutil

    from mi_dsl.running import run_spec
    from tests.word_tokenizer import word_tokenizer_file

    copy = tmp_path / "tokenizer.json"
    shutil.copyfile(word_tokenizer_file(), copy)
    spec = write_spec(tmp_path, tiny("gpt_neox").replace(str(word_tokenizer_file()), str(copy)),
                      analyses=ANALYSES, extra=PIPELINE)

    def run():  # one process throughout: a file saved again is read again here too
        outcome = run_spec(spec, out_dir=str(tmp_path / "runs"), progress=False)
        return json.loads((outcome.run_dir / "results.json").read_text())["store"]

    run()
    assert run()["reused"] == 5
    copy.write_text(copy.read_text() + "\n")  # saved again (the same words here, one more byte)
    assert run() == {"reused": 0, "computed": 5, "distrusted": []}
