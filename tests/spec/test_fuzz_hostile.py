"""Issue 27, goal 6: 216 seeded mutations of the shipped specs through `mi-run plan --json`.

Each case must end within its timeout (a timeout is a failure) with exit 0, or exit 2 and one
located line (`FILE:LINE:COL: kind: message`, then only `  hint:` lines); nothing it reads
outside its tree is printed, and nothing is written outside the temporary tree. The cases run
in one worker process (the CLI's `main` in-process, the tokenizer loaded once), which the test
kills and restarts when a case times out, so the whole test takes a few minutes.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from tests.spec.fuzz_cases import SECRET, cases

REPO = Path(__file__).resolve().parents[2]
COUNT = int(os.environ.get("MI_DSL_FUZZ_CASES", 216))
TIMEOUT_S = 60  # per case, on a loaded 2-core machine; validate is bounded to seconds (mi_dsl/limits.py)
LOCATED = re.compile(r"^[^\n]+:\d+:\d+: [a-z ]+: ")


def _worker(conn, cwd: str) -> None:
    os.chdir(cwd)
    os.environ.pop("MI_DSL_ALLOW_PATH", None)  # nothing is allowed beyond each spec's tree
    from mi_dsl.cli.main import main

    while True:
        path = conn.recv()
        if path is None:
            return
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(["plan", path, "--json"])  # --json prints every vocabulary item read
            except SystemExit as exit_:  # argparse
                code = exit_.code
            except BaseException as exc:  # noqa: BLE001  (reported as a failure, not raised here)
                code, _ = -1, err.write(f"escaped main(): {type(exc).__name__}: {exc}")
        conn.send((code, out.getvalue(), err.getvalue()))


class Worker:
    def __init__(self, cwd: Path):
        self.cwd, self.process = str(cwd), None

    def run(self, path: Path):
        """(exit code, stdout, stderr), or None when the case passed its timeout (the worker is killed)."""
        if self.process is None:
            context = multiprocessing.get_context("spawn")
            self.conn, child = context.Pipe()
            self.process = context.Process(target=_worker, args=(child, self.cwd), daemon=True)
            self.process.start()
        self.conn.send(str(path))
        if not self.conn.poll(TIMEOUT_S):
            self.process.kill()
            self.process.join()
            self.process = None
            return None
        return self.conn.recv()

    def close(self):
        if self.process is not None:
            self.conn.send(None)
            self.process.join(timeout=30)


def build_tree(tmp_path: Path) -> tuple:
    """tree/specs: copies of the shipped specs and their data (each case's own tree), and a link out;
    tree/outside, beside it (`../outside` from a case): a secret, a base spec that reads it, and
    FIFOs as a tokenizer, a model config and a file, none of which a case may read."""
    tree = tmp_path / "tree"
    outside = tree / "outside"
    shutil.copytree(REPO / "specs", tree / "specs", ignore=shutil.ignore_patterns("runs", "sweeps"))
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "base.yaml").write_text("version: 1\nmodel: {source: embedded, prepend_bos: true}\n"
                                       "vocabularies:\n  x: {file: secret.txt}\n")
    (outside / "model").mkdir()
    # FIFOs: a read of any of them blocks until the case's timeout, so a read outside the tree that
    # prints nothing still fails the test
    for fifo in ("fifo", "tok.json", "model/config.json"):
        os.mkfifo(outside / fifo)
    (tree / "specs" / "link_out").symlink_to(outside, target_is_directory=True)
    return tree, outside


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir() or p.is_fifo() or p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def test_mutated_shipped_specs_end_cleanly(tmp_path):
    tree, outside = build_tree(tmp_path)
    before_outside, before_repo = snapshot(outside), snapshot(REPO / "specs")
    worker, failures = Worker(tree), []
    made = cases(REPO, COUNT)
    try:
        for case_id, _source, text in made:
            path = tree / "specs" / f"{case_id}.yaml"
            path.write_text(text)
            outcome = worker.run(path)
            path.unlink()
            if outcome is None:
                failures.append(f"{case_id}: no answer within {TIMEOUT_S} s")
                continue
            code, out, err = outcome
            lines = err.strip().splitlines()
            if SECRET in out + err:
                failures.append(f"{case_id}: printed what a file outside its tree holds")
            elif code == 0:
                continue
            elif code != 2:
                failures.append(f"{case_id}: exit {code}: {err.strip()[-400:]}")
            elif not lines or not LOCATED.match(lines[0]) or not all(l.startswith("  hint: ") for l in lines[1:]):
                failures.append(f"{case_id}: exit 2 without one located line: {err.strip()[:400]!r}")
    finally:
        worker.close()
    assert not failures, f"{len(failures)} of {len(made)} cases failed:\n" + "\n".join(failures)
    assert snapshot(outside) == before_outside and snapshot(REPO / "specs") == before_repo
    assert {p.name for p in tmp_path.iterdir()} == {"tree"}, "nothing is written outside the temporary tree"
    assert {p.name for p in tree.iterdir()} == {"specs", "outside"}, "plan writes nothing (no runs folder)"
