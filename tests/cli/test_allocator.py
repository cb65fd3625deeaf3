"""The console script's allocator setting (mi_dsl/cli/allocator.py), in processes of their own: freed
memory is reused by the next allocation instead of being mapped and zeroed again.

(No new words in string literals: they would become tokens of tests/word_tokenizer.py's full vocabulary.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mi_dsl.cli import allocator
from mi_dsl.cli.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MMAP_BYTES, TRIM_BYTES, keep_freed_memory
from tests.cli import allocator_probe
from tests.conftest import REPO

linux_only = pytest.mark.skipif(not sys.platform.startswith(allocator.PLATFORM),
                                reason=allocator.__doc__.splitlines()[0])
PAGES = (48 << 20) // 4096


def second_buffer_faults(setting: str, **env) -> tuple:
    done = subprocess.run([sys.executable, "-m", allocator_probe.__name__, setting], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    was_set, faults, megabytes = map(int, done.stdout.split())
    assert megabytes == 48
    return bool(was_set), faults


@linux_only
def test_freed_memory_is_reused_without_new_page_faults():
    assert second_buffer_faults("0") == (False, pytest.approx(PAGES, rel=0.1))  # mapped and zeroed again
    was_set, faults = second_buffer_faults("1")
    assert was_set and faults < PAGES // 10


@linux_only
def test_a_users_own_malloc_settings_are_left_alone():
    assert second_buffer_faults("1", **{allocator.TUNABLES: allocator.MALLOC_TUNABLES})[0] is False
    assert second_buffer_faults("1", **{allocator.MALLOC_VARIABLES[0]: str(1 << 17)})[0] is False


@linux_only
def test_the_thresholds_given_to_mallopt(monkeypatch):
    """Both thresholds raised, on a libc that accepts them; a refusal reads as not set."""
    for name in (allocator.TUNABLES, *allocator.MALLOC_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    calls = []

    class Libc:
        def __init__(self, answer):
            self.answer = answer

        def mallopt(self, param, value):
            calls.append((param, value))
            return self.answer
    assert keep_freed_memory(Libc(1))
    assert calls == [(M_MMAP_THRESHOLD, MMAP_BYTES), (M_TRIM_THRESHOLD, TRIM_BYTES)]
    assert not keep_freed_memory(Libc(0))
