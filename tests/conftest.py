"""Fixtures shared by the spec front-end tests: tokenizers, the CLI as a subprocess.

Two tokenizers serve the tests:
- `tiny_tokenizer`: a word-level tokenizer.json written by the `tokenizers` library into a
  temporary folder (every word of the test specs is one token, unknown words are
  [UNK], "<bos>" is the BOS). Always there, so no test needs a downloaded file.
- `pythia_tokenizer`: the real GPT-NeoX tokenizer of Pythia (tests/seed_tokenizer.py), which
  the project does not ship, for the tests that reproduce the seed's own numbers; they skip
  with that reason when it is absent.
Runtime tests use the tokenizer built in the run instead (tests/word_tokenizer.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from tests.random_sizes import tiny_variant
from tests.seed_tokenizer import ABSENT, PYTHIA
from tests.word_tokenizer import allow_for_tests, word_level_tokenizer

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

# Every word the tiny-tokenizer specs use; anything else becomes [UNK].
TINY_WORDS = ["<bos>", "[UNK]", "The", "the", "All", "are", "Are", "is", ".", ",", "?", "Therefore",
              "cats", "dogs", "owls", "mice", "Cats", "Dogs", "Owls", "Mice",
              "big", "small", "tall", "short", "fast", "slow", "very", "red", "blue", "green"]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A word-level tokenizer.json (whitespace and punctuation split, "<bos>" BOS)."""
    path = word_level_tokenizer(TINY_WORDS, tmp_path_factory.mktemp("tiny_tokenizer"))
    allow_for_tests(path)  # named by test specs outside its folder
    return path


ROUGH = "tiny-rough"


def roughen(model) -> None:
    """Norm weights and biases away from identity and zero: every norm's weight gets N(0, 0.5)
    added (LayerNorm's 1 + noise; Gemma's stored w, used as 1 + w, becomes noise), every bias
    N(0, 0.2). Folding the final norm into the unembedding, the unembedding bias that LayerNorm's
    bias becomes, b_O and Gemma's (1 + w) weights then all matter to the numbers."""
    import torch

    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = name.rsplit(".", 2)[-2] if name.count(".") else ""
        if leaf == "bias":
            param.add_(0.2 * torch.randn_like(param))
        elif leaf == "weight" and ("norm" in owner or owner.startswith("ln")):
            param.add_(0.5 * torch.randn_like(param))


@pytest.fixture(scope="session")
def rough_models():
    """Registers size `tiny-rough` for every random architecture: the tiny shape with sharper weights
    (initializer_range 0.2) and roughened norms and biases (see `roughen`). Yields the size name."""
    with tiny_variant(ROUGH, finish=roughen) as name:
        yield name


@pytest.fixture(scope="session")
def pythia_tokenizer() -> Path:
    if not PYTHIA.is_file():
        pytest.skip(ABSENT)
    allow_for_tests(PYTHIA)
    return PYTHIA


def mi_run_command() -> List[str]:
    """The installed `mi-run` console script next to this Python, else `python -m mi_dsl.cli`."""
    script = Path(sys.executable).parent / "mi-run"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mi_dsl.cli"]


@pytest.fixture
def run_mi():
    """Run `mi-run ARGS...` as a real subprocess: returns (exit code, stdout, stderr)."""

    def run(*args, cwd=REPO, timeout=120) -> Tuple[int, str, str]:
        done = subprocess.run(mi_run_command() + [str(a) for a in args], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    return run


@pytest.fixture
def cli(capsys):
    """Run `mi-run ARGS...` in this process through mi_dsl.cli.main: (exit code, stdout, stderr)."""
    from mi_dsl.cli import main

    def run(*args) -> Tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run

