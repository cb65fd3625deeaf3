"""The `mi-run` process keeps the memory its tensors free for the next ones (glibc's malloc, Linux).

By default glibc serves every allocation over a threshold that grows to at most 32 MB with a fresh
`mmap` and returns it to the system when freed. PyTorch's CPU tensors of a forward (a batch's MLP
activations, a capture's node outputs) are mostly that large, so each forward mapped its memory anew
and the kernel zeroed every page of it again: `mi-run specs/syllogism.yaml --fresh` took 2.0-2.6
million page faults. With the mmap threshold at 64 MiB and the trim threshold at 1 GiB
(`keep_freed_memory`), freed memory stays in the heap and the next tensor reuses it: 0.65-0.68
million faults, the run 40.4 s twice against 40.8-43.3 s, peak RSS 2.95-3.08 GB against 2.92-3.06 GB.
Larger allocations (a model's weights, the embedding matrix) are still mapped on their own: with the
mmap threshold at 1 GiB too, the cold first run (conversion included) peaked at 3.74 GB instead of
3.59 GB, freed temporaries of the weights' load held in the heap; at 64 MiB it peaks at 3.61 GB.
Batch sizes never read how much memory the process holds (runtime/executor.py: a fixed CPU budget),
so no number depends on it.

Only the console script calls it (cli.main.console): a notebook or a test process that imports mi_dsl
keeps its own allocator settings. A user's own `GLIBC_TUNABLES` malloc settings, or glibc's
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`, are left as they are.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 64 << 20  # allocations under 64 MiB come from the heap (and reuse its freed memory)
TRIM_BYTES = 1 << 30   # up to 1 GiB of free memory at the heap's top stays mapped
TUNABLES, MALLOC_TUNABLES = "GLIBC_TUNABLES", "glibc.malloc"  # a user's malloc settings there are kept
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # as are these
PLATFORM = "linux"  # sys.platform's prefix where glibc's mallopt is tried


def keep_freed_memory(libc: Optional[Any] = None) -> bool:
    """Raise glibc's mmap threshold to MMAP_BYTES and its trim threshold to TRIM_BYTES; True when set.
    Nothing on other systems, nothing where the user chose malloc settings."""
    if not sys.platform.startswith(PLATFORM) or _user_chose():
        return False
    if libc is None:
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # musl and others
            return False
        if not hasattr(libc, "mallopt"):
            return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))


def _user_chose() -> bool:
    return MALLOC_TUNABLES in os.environ.get(TUNABLES, "") or any(name in os.environ for name in MALLOC_VARIABLES)
