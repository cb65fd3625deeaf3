"""Issue 27, findings 3, 4 and 7: a shared runs folder cannot redirect, poison or half-write a run.

Each test failed before its fix: a link planted at <runs>/<name> was written through; a stored
step edited to `L0H0 9.999` was printed as the result; an output dir that is a file, a read-only
folder and a full disk ended in tracebacks (exit 1) after the model had loaded, the last one
leaving a partial run folder that Results.load accepted. Tiny random models; the runs that need
no model stop before it loads.
"""
from __future__ import annotations

import errno
import io
import json
import os
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from mi_dsl.cli.main import main
from mi_dsl.errors import FileAccessError, RunError
from mi_dsl.running import run_spec
from tests.runtime.test_runtime import tiny, write_spec

ANALYSES = "analyses:\n  - {kind: head_attribution, id: heads}\n"


def cli(*args):
    """`mi-run ARGS` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path / "cache"))  # this test's own store key
    monkeypatch.chdir(tmp_path)  # runs go to ./runs
    lab = tmp_path / "lab"
    lab.mkdir()
    return write_spec(lab, tiny("gpt_neox"), analyses=ANALYSES)


def never_load(monkeypatch):
    """Loading the model fails the test: these faults must stop the run before it."""
    import mi_dsl.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.mark.parametrize("planted", ["runs/t", "runs/t/.store", "runs"])
def test_a_link_planted_in_the_runs_folder_is_refused_before_the_model_loads(spec, tmp_path, planted, monkeypatch):
    never_load(monkeypatch)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tmp_path / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(FileAccessError, match="is a link, not a folder"):
        run_spec(spec, progress=False)
    assert not list(outside.iterdir())


def test_an_output_dir_that_is_a_file_is_a_located_error_before_the_model_loads(spec, monkeypatch):
    never_load(monkeypatch)
    (spec.parent / "out").write_text("a file\n")
    spec.write_text(spec.read_text() + "output: {dir: out}\n")
    code, err = cli("run", spec, "--quiet")
    line = len(spec.read_text().splitlines())
    assert code == 2 and err.startswith(f"{spec}:{line}:") and "is a file, not a folder" in err
    assert "Traceback" not in err


def test_a_read_only_runs_folder_exits_3_before_the_model_loads(spec, monkeypatch):
    never_load(monkeypatch)
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, err = cli("run", spec, "--quiet")
    assert code == 3 and "environment error" in err and "read-only" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_folder_for_real(spec, tmp_path, monkeypatch):
    never_load(monkeypatch)
    (tmp_path / "runs").mkdir(mode=0o555)
    code, err = cli("run", spec, "--quiet")
    assert code == 3 and "permission denied" in err


def test_a_full_disk_while_writing_the_report_leaves_nothing_results_load_accepts(spec, tmp_path, monkeypatch):
    import mi_dsl.report.html as html
    from mi_dsl.results import Results

    real = html._write_figures

    def disk_full(log, run_dir):
        real(log, run_dir)  # some files are written, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(html, "_write_figures", disk_full)
    code, err = cli("run", spec, "--quiet")
    assert code == 3 and "the disk is full" in err and "Traceback" not in err
    folder = tmp_path / "runs" / "t"
    for run_dir in [p for p in folder.iterdir() if p.name != ".store"]:
        with pytest.raises(RunError):
            Results.load(run_dir)
    assert [p.name for p in folder.iterdir()] == [".store"], "no partial folder is left behind"
    monkeypatch.setattr(html, "_write_figures", real)  # the rerun reuses the stored steps and finishes
    assert cli("run", spec, "--quiet")[0] == 0
    [run_dir] = [p for p in folder.iterdir() if p.name != ".store"]
    assert Results.load(run_dir)["store"]["reused"] == 2


def entry_of(store: Path, kind: str) -> Path:
    [path] = store.glob(f"{kind}-*.json")
    return path


def test_a_poisoned_or_foreign_store_entry_is_recomputed_and_the_run_says_so(spec, tmp_path, monkeypatch):
    first = run_spec(spec, progress=False).results
    truth = first["analyses"]["heads"]["per_head"][0][0]
    store = tmp_path / "runs" / "t" / ".store"
    path = entry_of(store, "analysis")
    entry = json.loads(path.read_text())
    entry["value"]["record"]["per_head"][0][0] = 9.999  # the probe
    entry["value"]["record"]["summary"] = "top(heads): L0H0 9.999"
    path.write_text(json.dumps(entry))

    rerun = run_spec(spec, progress=False).results
    assert rerun["analyses"]["heads"]["per_head"][0][0] == truth != 9.999
    assert rerun["store"]["reused"] == 1 and rerun["store"]["distrusted"] == [path.name]
    [warning] = [w for w in rerun["warnings"] if path.name in w]
    assert warning.startswith(f"{spec}:") and "not used" in warning and "recomputed" in warning

    # another user's entries (another key), copied into this folder, are not reused either
    monkeypatch.setenv("MI_DSL_CACHE", str(tmp_path / "another-users-cache"))
    foreign = run_spec(spec, progress=False).results
    assert foreign["store"]["reused"] == 0 and len(foreign["store"]["distrusted"]) == 2
    assert foreign["analyses"]["heads"]["per_head"][0][0] == truth


def test_a_store_key_others_can_read_signs_nothing(spec, tmp_path):
    from mi_dsl.runtime.store import key_file

    run_spec(spec, progress=False)
    os.chmod(key_file(), 0o644)
    again = run_spec(spec, progress=False).results
    assert again["store"]["reused"] == 0
    assert any("readable by nobody else" in w for w in again["warnings"])


def test_an_unsigned_entry_from_before_signing_is_not_reused(spec, tmp_path):
    run_spec(spec, progress=False)
    path = entry_of(tmp_path / "runs" / "t" / ".store", "dataset")
    path.write_text(json.dumps(json.loads(path.read_text())["value"]))  # format 1: the bare value
    again = run_spec(spec, progress=False).results
    assert path.name in again["store"]["distrusted"]


def test_environment_faults_are_exit_3_not_tracebacks(monkeypatch, tmp_path):
    """Out of memory anywhere in a run is the machine's fault: one line, exit 3."""
    import sys

    cli_main = sys.modules["mi_dsl.cli.main"]  # the package re-exports main() under the module's name

    def exhausted(args):
        raise MemoryError()

    monkeypatch.setattr(cli_main, "_dispatch", exhausted)
    code, err = cli("validate", tmp_path / "x.yaml")
    assert code == 3 and err.count("\n") <= 2 and "out of memory" in err
    from mi_dsl.errors import EnvironmentFault

    assert isinstance(cli_main.environment_fault(OSError(errno.ENOSPC, "full", "/x")), EnvironmentFault)


def test_a_device_the_machine_lacks_is_located_at_model_device(spec):
    """`device: cuda:7` was located at model.source."""
    spec.write_text(spec.read_text().replace("  size: tiny\n", "  size: tiny\n  device: 'cuda:7'\n"))
    with pytest.raises(RunError, match="cuda:7") as err:
        run_spec(spec, progress=False)
    assert err.value.location.path == "model.device" and err.value.location.line == 7
