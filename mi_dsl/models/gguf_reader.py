"""One gguf.GGUFReader per GGUF file, shared by the conversions that read it in one process.

gguf's reader builds Python objects for every metadata entry, so reading the embedded
Gemma's metadata (262,144 vocabulary entries) takes ~9 s and ~0.7 GB. A cold start read the
same file four times: the tokenizer's conversion (transformers' AutoTokenizer), then the
model's config, transformers' metadata parse and the tensor plan (convert.py). Inside
`shared()`, `gguf.GGUFReader(path)` (transformers imports it inside its functions, so it sees
the swap) returns the reader this process already built for that file, unchanged on disk
(path, size and modification time). Readers are read-only memory maps, so sharing one
changes nothing read through it. One reader is kept between conversions, so the model's
conversion reuses the tokenizer's; the model's conversion drops it when its plan is made
(`release()`; the conversion job, gguf_job.py, drops one a tokenizer conversion left when the
model was cached).
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

_lock = threading.Lock()
_kept: Optional[Tuple[tuple, Any]] = None  # (file identity, reader): the last file read


def _identity(path) -> tuple:
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


@contextmanager
def shared() -> Iterator[None]:
    """While open, gguf.GGUFReader(path) (read-only) returns one reader per file."""
    import gguf

    original = gguf.GGUFReader
    if getattr(original, "_mi_dsl_shared", False):  # nested: the outer swap serves
        yield
        return

    def reader(path, mode="r"):
        global _kept
        if mode != "r":
            return original(path, mode)
        key = _identity(path)
        with _lock:
            if _kept is None or _kept[0] != key:
                _kept = None  # the previous file's reader goes before the next one is built
                _kept = (key, original(path, mode))
            return _kept[1]

    reader._mi_dsl_shared = True  # type: ignore[attr-defined]
    setattr(gguf, "GGUFReader", reader)  # noqa: B010 (a class swapped for a function: mypy refuses `=`)
    try:
        yield
    finally:
        setattr(gguf, "GGUFReader", original)  # noqa: B010


def release() -> None:
    """Drop the kept reader (its memory maps and metadata objects)."""
    global _kept
    with _lock:
        _kept = None
