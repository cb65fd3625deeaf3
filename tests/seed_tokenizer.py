"""The real Pythia tokenizer (GPT-NeoX's 20B_tokenizer.json), for the tests whose point is the
seed's own numbers: Pythia's token ids and lengths, the seed notebook's dataset and plan.

mi-dsl does not ship the file: it is the shared checkout's copy (../shared next to the
repository) or MI_DSL_PYTHIA_TOKENIZER. Every other test runs on the tokenizer built inside
the test run (tests/word_tokenizer.py), so only these skip where the file is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHIA = Path(os.environ.get("MI_DSL_PYTHIA_TOKENIZER",
                             REPO.parent / "shared" / "tokenizers" / "pythia" / "20B_tokenizer.json"))
ABSENT = (f"reproduces the seed's own numbers, which need the real Pythia tokenizer {PYTHIA}; it is not on "
          "this machine (mi-dsl does not ship it; set MI_DSL_PYTHIA_TOKENIZER to a copy of 20B_tokenizer.json)")

needs_pythia = pytest.mark.skipif(not PYTHIA.is_file(), reason=ABSENT)
