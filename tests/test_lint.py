"""CI lints and type-checks: ruff (pyproject's [tool.ruff]) over the package, tests and benchmarks,
and mypy (pyproject's [tool.mypy]: the package, less the modules its overrides list). Both are
pinned in the `test` extra, so a new release of either cannot fail this test on its own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_passes():
    done = _run("ruff", "check", "mi_dsl", "tests", "benchmarks", timeout=120)
    assert done.returncode == 0, f"ruff check failed:\n{done.stdout}{done.stderr}"


def test_mypy_passes():
    # The cache (.mypy_cache, git-ignored) makes a rerun take seconds; a cold run takes about a minute.
    done = _run("mypy", timeout=300)
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
