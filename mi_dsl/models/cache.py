"""mi-dsl's on-disk cache: where it lives, how entries are keyed and written.

Importing it needs the standard library only (no torch), so the tokenization layer
can find a cached tokenizer without loading a model stack.

Every entry is a directory written whole: it is built under a `.partial-*` name
beside its final place and renamed into place at the end, so a run killed half-way
leaves no half entry (the next run removes stale partial directories and starts over).
Before the rename its checksums are recorded (`integrity.py`); an entry whose files no
longer match them (truncated, altered in place) is not used: it is removed and built
again, and the reason is kept for the run's warnings (`take_repairs`). Building takes a
lock beside the entry (`.NAME.lock`, released by the kernel if the process dies), so two
processes that need the same entry build it once: the second waits, then uses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

from . import integrity

CACHE_ENV = "MI_DSL_CACHE"
FORMAT = 2                      # bump when the layout or the conversion changes (2: checksums)
_PARTIAL = ".partial-"
_STALE_PARTIAL_SECONDS = 6 * 3600


def cache_root() -> Path:
    """`$MI_DSL_CACHE`, else `~/.cache/mi-dsl`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mi-dsl"


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts, for entry names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(path: Path, head_bytes: int = 1 << 20) -> str:
    """Identity of a file's content, cheap for big files: size, mtime and a hash of its head.

    A GGUF's head is its header (architecture, hyper-parameters, vocabulary), so two
    different model files practically never share it; a touched file only costs a
    reconversion, never a stale reuse.
    """
    stat = path.stat()
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        hasher.update(handle.read(head_bytes))
    return digest(stat.st_size, stat.st_mtime_ns, hasher.hexdigest())


def entry(root: Optional[Path], kind: str, key: str) -> Path:
    """Where the entry `key` of `kind` ("models", "tokenizers", "processed") lives."""
    return (root or cache_root()) / f"v{FORMAT}" / kind / key


def ready(path: Path) -> bool:
    """Whether the entry was written completely (the rename is the commit) and its files are
    still what was written (a damaged entry is reported once through `take_repairs`)."""
    if not path.is_dir():
        return False
    fault = integrity.problem(path)
    if fault is not None and fault not in _repairs:
        _repairs.append(fault)
    return fault is None


_repairs: List[str] = []


def take_repairs() -> List[str]:
    """What was found wrong with cache entries since the last call (each entry is rebuilt)."""
    found = list(_repairs)
    _repairs.clear()
    return found


_built: List[str] = []


def note_built(final: Path) -> None:
    """Entry `final` was built by this run (in a child process, say): the next `take_built` says so."""
    _built.append(str(final))


def take_built(final: Path) -> bool:
    """Whether this run built entry `final` since it was last asked (once: a later load reads a cache)."""
    if str(final) not in _built:
        return False
    _built.remove(str(final))
    return True


Say = Callable[[str], None]


@contextmanager
def locked(final: Path, say: Optional[Say] = None) -> Iterator[None]:
    """Hold the lock of entry `final` (waiting, with a progress line, while another process builds it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the rename still keeps entries whole
        yield
        return
    with open(final.parent / f".{final.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if say is not None:
                say(f"waiting for another mi-dsl process that is writing {final.parent.name}/{final.name}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(final: Path, build: Callable[[Path], None], say: Optional[Say] = None) -> bool:
    """Make entry `final` exist: True when it was already there (or another process built it
    while this one waited), False when `build(scratch)` built it here."""
    if ready(final):
        return True
    with locked(final, say):
        if ready(final):
            return True
        if final.exists() and say is not None:
            say(f"building {final.parent.name}/{final.name} again: {integrity.problem(final)}")
        discard(final)
        with building(final) as scratch:
            build(scratch)
    return False


def discard(final: Path) -> None:
    """Remove a damaged entry (renamed aside first, so no reader sees half of it)."""
    if not final.exists():
        return
    aside = final.parent / f"{_PARTIAL}{final.name}-damaged-{os.getpid()}"
    try:
        os.rename(final, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes `final` when the block succeeds.

    If another process finished the same entry meanwhile, its copy wins and ours is
    dropped: both were built from the same inputs.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final.parent)
    scratch = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{final.name}-", dir=final.parent))
    try:
        yield scratch
        integrity.record(scratch)
        try:
            os.rename(scratch, final)
        except OSError:
            if not ready(final):
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _remove_stale_partials(directory: Path) -> None:
    now = time.time()
    for child in directory.glob(f"{_PARTIAL}*"):
        try:
            if now - child.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass
