"""`python -m tests.cli.allocator_probe 1|0`: whether keep_freed_memory (1: called) set the thresholds,
and the page faults of writing a second 48 MiB buffer after the first one was freed (over the 32 MB
that glibc's default maps on its own, under MMAP_BYTES)."""
from __future__ import annotations

import resource
import sys

from mi_dsl.cli.allocator import keep_freed_memory


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    was_set = keep_freed_memory() if sys.argv[1] == "1" else False
    first = bytearray(48 << 20)  # zero-filled: every page written
    del first
    before = faults()
    second = bytearray(48 << 20)
    print(int(was_set), faults() - before, len(second) >> 20)


if __name__ == "__main__":
    main()
