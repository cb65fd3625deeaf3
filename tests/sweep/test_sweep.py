"""Sweeps on tiny random models: expansion, validation of every point before any runs,
the merged tidy table, the report, resuming, sharding, and the Ray backend (on a local
Ray with 2 CPUs that the test starts and stops). The last test is the issue's acceptance
test on the real model: a tutorial sweep on Ray, killed mid-way, resumed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from mi_dsl.sweep import run_sweep

from tests.spec_parts import syllogism
from tests.word_tokenizer import word_tokenizer_file

# Ray binds to the loopback address only when this is set before it is imported (in this
# process, the test's Ray and its workers): the test cluster is never reachable from outside.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# No token authentication for the test's loopback-only Rays: a new local Ray would otherwise
# write ~/.ray/auth_token, and every later `ray start` on the machine would then demand it.
os.environ["RAY_AUTH_MODE"] = "disabled"

SPEC = """
version: 1
name: t
model: {source: random, architecture: gemma3, size: tiny, seed: 3, prepend_bos: true}
""" + syllogism(equal_lengths=False) + """\
pipeline:
  - sample: {n: 6, seed: 7}   # fixed: the seed axis then changes only head_detection (see test_seeds_...)
  - symmetric: true
analyses:
  - {kind: head_attribution, id: heads, top_k: 4}
  - {kind: head_detection, id: induction, seq_len: 6, batch: 1}
"""

SWEEP = """
version: 1
spec: spec.yaml
axes:
  seed: [0, 1]
  vocabularies.nouns.items:
    wild: [Wolves, Bears]
    farm: [Cows, Horses]
"""


def write(folder: Path, sweep: str = SWEEP, spec: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(textwrap.dedent(spec))
    (folder / "sweep.yaml").write_text(textwrap.dedent(sweep))
    return folder / "sweep.yaml"


def tidy(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "results.parquet")
    return frame.sort_values(["point", "section", "quantity", "index", "label"]).reset_index(drop=True)


def same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    pd.testing.assert_series_equal(a["value"], b["value"], rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny sweep, run once in this process on the local backend."""
    sweep = write(tmp_path_factory.mktemp("local"))
    outcome = run_sweep(sweep, progress=False)
    return sweep, outcome


def test_sweep_runs_every_point_and_merges_every_number(local_sweep):
    sweep, outcome = local_sweep
    out = sweep.parent / "sweeps" / "sweep"
    assert outcome.ran == ["p000", "p001", "p002", "p003"] and not outcome.failed
    frame = tidy(out)
    assert {"seed", "vocabularies.nouns.items", "point", "section", "quantity", "value"} <= set(frame.columns)
    assert set(zip(frame["seed"], frame["vocabularies.nouns.items"])) == {
        ("0", "wild"), ("0", "farm"), ("1", "wild"), ("1", "farm")}
    csv = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(csv) == len(frame)
    # Each point's numbers are its run's: the baselines row equals that run's results.json.
    for point in ("p000", "p003"):
        record = json.loads((out / "points" / f"{point}.json").read_text())
        results = json.loads((out / record["run_dir"] / "results.json").read_text())
        row = frame[(frame.point == point) & (frame.section == "baselines") & (frame.quantity == "clean")]
        assert row["value"].item() == pytest.approx(results["baselines"]["clean"], rel=1e-9)
        heads = frame[(frame.point == point) & (frame.section == "heads") & (frame.quantity == "per_head")]
        grid = results["analyses"]["heads"]["per_head"]
        assert len(heads) == len(grid) * len(grid[0])
        assert heads[heads["index"] == "1,2"]["value"].item() == pytest.approx(grid[1][2], rel=1e-9)
    # The axes reached the runs: each point's pairs use its own nouns.
    run_dir = json.loads((out / "points" / "p001.json").read_text())["run_dir"]
    pairs = pd.read_csv(out / run_dir / "tables" / "pairs.csv")
    assert all(any(n in text for n in ("cows", "horses")) for text in pairs["clean"])


def test_seeds_do_not_share_seeded_results(local_sweep):
    """head_detection draws its random tokens from the spec's seed: with a shared store,
    the second seed must compute its own result, never reuse the first one's."""
    sweep, _ = local_sweep
    frame = tidy(sweep.parent / "sweeps" / "sweep")
    scores = frame[(frame.section == "induction") & (frame.quantity == "induction")
                   & (frame["vocabularies.nouns.items"] == "wild")]
    by_seed = {seed: group["value"].tolist() for seed, group in scores.groupby("seed")}
    assert by_seed["0"] and by_seed["0"] != by_seed["1"]


def test_report_compares_runs(local_sweep):
    sweep, _ = local_sweep
    out = sweep.parent / "sweeps" / "sweep"
    page = (out / "index.html").read_text()
    assert "4 of 4 points finished" in page and "Stability of top heads across seeds" in page
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["point"]) == ["p000", "p001", "p002", "p003"]
    for link in runs["report"]:
        assert (out / link).is_file() and f"href='{link}'" in page
    assert (out / "figures" / "heads.html").is_file()
    assert "mean_overlap" in page
    # the run reports' grid convention: every layer labelled, layer 0 on top, one signed colour scale
    figure = json.loads((out / "figures" / "heads.json").read_text())
    layers = len(figure["data"][0]["z"])
    yaxes = [v for k, v in figure["layout"].items() if k.startswith("yaxis")]
    assert len(yaxes) == 4 and all(a["autorange"] == "reversed" and a["tickvals"] == list(range(layers))
                                   and a["ticktext"] == [str(l) for l in range(layers)] for a in yaxes)
    assert figure["layout"]["coloraxis"]["cmid"] == 0 and figure["layout"]["coloraxis"]["colorscale"][0][1] \
        == "rgb(103,0,31)"  # RdBu: red below zero


def test_rerun_skips_finished_points_and_a_changed_base_reruns(local_sweep):
    from mi_dsl.sweep.command import _write_points, validate_points
    from mi_dsl.sweep.expand import load_sweep
    from mi_dsl.sweep.records import finished

    sweep, _ = local_sweep
    again = run_sweep(sweep, progress=False)
    assert again.ran == [] and again.skipped == ["p000", "p001", "p002", "p003"]
    base = sweep.parent / "spec.yaml"
    text = base.read_text()
    try:  # an edited base spec: no finished record may stand for it
        base.write_text(text.replace("[birds, fish, mammals]", "[birds, fish]"))
        edited = load_sweep(sweep)
        _write_points(edited)
        keys = validate_points(edited, [])
        assert all(finished(edited, p, keys[p.id]) is None for p in edited.points)
    finally:
        base.write_text(text)


def test_every_point_is_validated_before_any_runs(tmp_path, cli):
    bad = SWEEP.replace("farm: [Cows, Horses]", "farm: [Cows, Horses]\n  metric: [logit_diff, logit_dif]")
    sweep = write(tmp_path, bad)
    code, out, err = cli("sweep", sweep, "--quiet")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    # Four points use the bad metric; each fault names its point and points at the value in the sweep file.
    faulty = [line for line in lines if "logit_dif'" in line]
    assert len(faulty) == 4, err
    line_no = bad.splitlines().index("  metric: [logit_diff, logit_dif]") + 1
    assert all(line.startswith(f"{sweep}:{line_no}:24: ") for line in faulty), err
    assert "point p001 (seed=0, vocabularies.nouns.items=wild, metric=logit_dif)" in err
    assert not (tmp_path / "sweeps" / "sweep" / "runs").exists()


def test_sweep_file_faults_are_located(tmp_path, cli):
    sweep = write(tmp_path, "version: 1\nspec: spec.yaml\naxes:\n  seed: []\n")
    code, _, err = cli("sweep", sweep)
    assert code == 2 and err.startswith(f"{sweep}:4:") and "non-empty list" in err
    sweep = write(tmp_path, "version: 1\nspec: nothere.yaml\naxes: {seed: [1]}\n")
    code, _, err = cli("sweep", sweep)
    assert code == 2 and err.startswith(f"{sweep}:2:") and "does not exist" in err
    code, _, err = cli("sweep", write(tmp_path), "--shard", "2/2")
    assert code == 2 and "0 <= i < n" in err


def test_shards_split_the_points(tmp_path):
    sweep = write(tmp_path, SWEEP.replace("seed: [0, 1]", "seed: [0]"))
    first = run_sweep(sweep, shard="1/2", progress=False)
    assert first.ran == ["p001"]
    second = run_sweep(sweep, shard="0/2", progress=False)
    assert second.ran == ["p000"]
    assert "2 of 2 points finished" in second.report_path.read_text()


def _sweep_process(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mi_dsl.cli", "sweep", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after_first_point(process: subprocess.Popen, points: Path, total: int, timeout: float = 600) -> int:
    """SIGKILL the sweep once one point has finished; returns how many had."""
    deadline = time.time() + timeout
    while not list(points.glob("p*.json")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("the sweep ended before it could be killed: " + process.stderr.read())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(points.glob("p*.json")))
    assert 1 <= done < total, "the kill must land mid-way"
    return done


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs on the loopback address, in its own process group, stopped after."""
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(["ray", "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard",
                             "false", "--disable-usage-stats", "--temp-dir", temp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})  # loopback: see the top
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port, head)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, head: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.poll() is not None:
            pytest.fail("ray start exited")
        with socket.socket() as conn:
            if conn.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail("Ray did not start")


def test_ray_backend_gives_the_local_backend_numbers(tmp_path, ray_cluster, local_sweep):
    """Seed 0's two points as Ray tasks (one each on the 2 CPUs): the local backend's numbers."""
    sweep = write(tmp_path, SWEEP.replace("seed: [0, 1]", "seed: [0]") + "resources: {cpus: 1, memory_gb: 1}\n")
    outcome = run_sweep(sweep, backend="ray", address=ray_cluster, progress=False)
    assert sorted(outcome.ran) == ["p000", "p001"] and not outcome.failed
    local = tidy(local_sweep[0].parent / "sweeps" / "sweep")
    same_numbers(tidy(tmp_path / "sweeps" / "sweep"), local[local["seed"] == "0"].reset_index(drop=True))


def test_ray_backend_without_an_address_runs_a_ray_of_its_own(tmp_path):
    """No --address: a new local Ray (never a stale cluster file's), shut down after the sweep."""
    pytest.importorskip("ray")
    sweep = write(tmp_path, "version: 1\nspec: spec.yaml\naxes:\n  seed: [4]\n")
    outcome = run_sweep(sweep, backend="ray", progress=False)
    assert outcome.ran == ["p000"] and not outcome.failed
    import ray

    assert not ray.is_initialized()


def test_ray_backend_refuses_an_unreachable_cluster(tmp_path, cli):
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = cli("sweep", write(tmp_path), "--backend", "ray", "--address", f"127.0.0.1:{port}", "--quiet")
    assert code == 2 and "cannot reach the Ray cluster" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the acceptance test

TUTORIAL_SWEEP = Path(__file__).resolve().parents[2] / "specs" / "sweeps" / "tutorial.yaml"


@pytest.mark.slow
def test_tutorial_sweep_on_ray_killed_and_resumed_gives_the_uninterrupted_table(tmp_path, ray_cluster):
    """specs/tutorial.yaml (the embedded Gemma-3-270m) over 2 seeds x 2 noun lists as Ray tasks
    on a local 2-CPU Ray: kill the sweep after its first point, rerun it, and compare its merged
    table with an uninterrupted sweep's."""
    resumed, reference = tmp_path / "resumed", tmp_path / "reference"
    args = ("--backend", "ray", "--address", ray_cluster)
    points = resumed / "tutorial" / "points"
    done = kill_after_first_point(_sweep_process(TUTORIAL_SWEEP, *args, "--out", resumed, "--quiet"), points, 4)
    rerun = _sweep_process(TUTORIAL_SWEEP, *args, "--out", resumed)
    assert rerun.wait(timeout=900) == 0, rerun.stderr.read()
    assert f"{done} point(s) finished before" in rerun.stderr.read()
    whole = _sweep_process(TUTORIAL_SWEEP, *args, "--out", reference, "--quiet")
    assert whole.wait(timeout=900) == 0, whole.stderr.read()

    table = tidy(resumed / "tutorial")
    same_numbers(table, tidy(reference / "tutorial"))
    assert set(table["vocabularies.nouns.items"]) == {"canines", "felines"} and set(table["seed"]) == {"0", "1"}
    baselines = table[(table.section == "baselines") & (table.quantity == "clean")]
    assert len(baselines) == 4 and (baselines["value"] > 0).all()  # kept pairs: the model is right on them
    page = (resumed / "tutorial" / "index.html").read_text()
    assert "4 of 4 points finished" in page and "mean_overlap" in page
    # The tutorial samples nothing, so its seeds must agree on the top heads exactly.
    stability = head_stability_rows(resumed / "tutorial")
    assert [row["mean_overlap"] for row in stability] == [1.0, 1.0]


def head_stability_rows(folder: Path):
    from mi_dsl.sweep.expand import load_sweep
    from mi_dsl.sweep.report import head_stability
    from mi_dsl.sweep.tidy import finished_runs

    sweep = load_sweep(TUTORIAL_SWEEP, str(folder.parent))
    return head_stability(sweep, finished_runs(sweep))


def test_a_finished_point_reruns_when_its_model_was_saved_again_under_the_same_path(tmp_path):
    """A point's key holds the weights' fingerprint: a rerun of the sweep over a checkpoint folder
    overwritten in place must not skip the point as finished."""
    from types import SimpleNamespace

    from mi_dsl.models.model_spec import ModelSpec
    from mi_dsl.sweep.records import point_key

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(8))
    spec = SimpleNamespace(hash=lambda: "h", vocabularies={})
    plan = SimpleNamespace(model=ModelSpec(source="local", path=str(folder)))
    before = point_key(spec, plan)
    assert point_key(spec, plan) == before
    (folder / "model.safetensors").write_bytes(bytes(16))
    assert point_key(spec, plan) != before
    missing = SimpleNamespace(model=ModelSpec(source="local", path=str(tmp_path / "missing")))
    assert point_key(spec, missing)  # a model not there yet: the run says so, the key still forms


def test_a_finished_point_reruns_when_a_vocabulary_field_changed(tmp_path):
    """A vocabulary file's fields (a causal model reads them) are part of a point's key, not only its
    words (the spec's own text, hashed too, does not hold a file's content)."""
    from mi_dsl.compile import prepare
    from mi_dsl.sweep.records import point_key

    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        version: 1
        name: t
        model: {{source: random, architecture: gpt_neox, size: tiny, prepend_bos: false,
                 tokenizer: {word_tokenizer_file()}}}
        vocabularies:
          animals: {{file: animals.csv}}
        prompts:
          template: "The {{animal}} are"
          slots: {{animal: animals}}
          answer: 'first_token(" big")'
          foil: 'first_token(" small")'
        """))

    def key(kind):
        (tmp_path / "animals.csv").write_text(f"name,kind\ncats,{kind}\ndogs,one\n")
        prepared = prepare(str(spec), [], [], need_tokenizer=False)
        return point_key(prepared.spec, prepared.plan)
    assert key("one") == key("one") and key("one") != key("two")
