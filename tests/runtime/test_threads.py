"""The thread policy (runtime/threads.py) and `mi-run --threads`."""
from __future__ import annotations

import json

import pytest

from mi_dsl.runtime import threads

from tests.spec_parts import animals, spec_text


def test_requested_beats_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(2, "cpu") == {"threads": 2, "reason": "--threads"}
    assert threads.choose_threads(None, "cpu") == {"threads": 3, "reason": "OMP_NUM_THREADS"}


@pytest.mark.parametrize("cores, others, expected", [(2, 0.0, 2), (2, 0.25, 2), (2, 0.45, 1), (2, 1.0, 1),
                                                     (2, 1.9, 1), (2, 9.0, 1), (16, 3.0, 13), (4, 0.05, 4)])
def test_one_thread_per_core_other_processes_leave_free(monkeypatch, cores, others, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores_available", lambda: cores)
    monkeypatch.setattr(threads.CpuSample, "others", lambda self: others)
    choice = threads.choose_threads(None, "cpu")
    assert choice["threads"] == expected and f"{cores} cores" in choice["reason"]
    assert choice["others"] == others and "other processes used" in choice["reason"]


def test_the_load_average_is_not_what_decides(monkeypatch):
    """Back to back: the 1-minute load average still holds mi-dsl's own previous run (0.85 on two
    idle cores gave one thread before); the measured use of other processes decides."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores_available", lambda: 2)
    monkeypatch.setattr(threads, "load_average", lambda: 1.6)
    monkeypatch.setattr(threads.CpuSample, "others", lambda self: 0.02)
    assert threads.choose_threads(None, "cpu")["threads"] == 2
    monkeypatch.setattr(threads.CpuSample, "others", lambda self: None)  # no /proc/stat: the load stands in
    fallback = threads.choose_threads(None, "cpu")
    assert fallback["threads"] == 1 and "1-minute load 1.60" in fallback["reason"]


def test_others_excludes_this_process_and_counts_a_busy_one():
    """This process spinning is not 'other processes'; a spinning child is (about one core)."""
    import subprocess
    import sys
    import time

    if threads._core_ticks(threads._allowed_cpus() or [0]) is None:
        pytest.skip("no /proc/stat")
    sample = threads.CpuSample.now()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:  # one core's worth, in this process
        pass
    quiet = sample.others()
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)
        sample = threads.CpuSample.now()
        time.sleep(1.0)
        busy = sample.others()
    finally:
        spinner.kill()
        spinner.wait()
    # Other sessions share this machine, so only differences are asserted, with room for them.
    assert busy - quiet > 0.5 or busy > 0.8, (quiet, busy)


def test_a_run_adapts_between_steps_and_records_it(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores_available", lambda: 2)
    seen = iter([0.1, 0.1, 1.2, 0.0])
    monkeypatch.setattr(threads.CpuSample, "others", lambda self: next(seen))
    monkeypatch.setattr(threads, "WINDOW", 0.0)
    before = __import__("torch").get_num_threads()
    try:
        policy = threads.ThreadPolicy(None, "cpu")
        policy.start()
        assert policy.apply("model load")["in_effect"] == 2
        policy.apply("pipeline")
        policy.apply("patch")  # another job took a core
        policy.apply("circuit")  # and left
        record = policy.record()
        assert record["threads"] == 2 and [(c["step"], c["threads"]) for c in record["changes"]] == [
            ("patch", 1), ("circuit", 2)]
    finally:
        __import__("torch").set_num_threads(before)


def test_a_fixed_count_is_never_revisited(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads.CpuSample, "others", lambda self: pytest.fail("measured a fixed count"))
    policy = threads.ThreadPolicy(None, "cpu")
    policy.start()
    assert policy.apply("pipeline")["reason"] == "OMP_NUM_THREADS" and policy.record()["threads"] == 1


def test_gpu_keeps_the_default(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(None, "cuda")["threads"] is None


def test_mi_run_threads_is_honoured_and_recorded(tmp_path, tiny_tokenizer, cli):
    import torch

    spec = tmp_path / "t.yaml"
    spec.write_text(spec_text(f"""
        version: 1
        name: t
        model: {{source: random, architecture: gpt_neox, size: tiny, tokenizer: {tiny_tokenizer},
                 prepend_bos: true, bos_token: "<bos>", device: cpu}}
        """, animals(("cats", "dogs"), (("big", "small"),)), """
        analyses:
          - {kind: predictions}
        """))
    before = torch.get_num_threads()
    try:
        code, out, err = cli("run", spec, "--threads", "1", "--out", tmp_path / "runs", "--quiet", "--fresh")
        assert code == 0, err
        results = json.loads(next((tmp_path / "runs").rglob("results.json")).read_text())
        assert results["threads"]["threads"] == 1 and results["threads"]["reason"] == "--threads"
        assert results["threads"]["in_effect"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exited:  # argparse refuses it with a usage line, exit code 2
        cli("run", spec, "--threads", "0")
    assert exited.value.code == 2
