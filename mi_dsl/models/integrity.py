"""Checksums of cache entries: recorded when an entry is written, checked each time it is used.

A converted model is a gigabyte of float32 numbers. A truncated copy used to fail with a
library traceback on every run; a copy altered in place to plausible values silently gave
different numbers. So every entry carries `checksums.json`, written last, before the entry
is renamed into place: for each file its size, its mtime, its full SHA-256 and a sampled
hash (the first 64 KiB, where a safetensors or JSON header lives, and 64 blocks of 4 KiB
spread evenly over the file).

Checking an entry (`problem`) reads about half a megabyte, whatever its size:
- the size must match (a truncated or extended file fails here);
- the sampled hash must match (bit rot, an overwritten header, a damaged tensor that a
  sample lands on);
- when the mtime differs from the recorded one (any ordinary in-place write changes it),
  the whole file is hashed once and must match its full SHA-256; if it does (a copy that
  kept the bytes, a `touch`), the new mtime is recorded so the next start is cheap again.
A full hash of a 1 GB file takes 1-2 s on a shared CPU, so it is not done on every start;
`MI_DSL_VERIFY_CACHE=full` does it on every first use of an entry in a process.

Standard library only: the torch-free tokenizer resolver checks its entries too.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional

MANIFEST = "checksums.json"
VERIFY_ENV = "MI_DSL_VERIFY_CACHE"
HEAD_BYTES = 64 << 10
SAMPLES = 64
BLOCK = 4 << 10
_CHUNK = 8 << 20

_fully_verified: set = set()  # (path, size, mtime) hashed in full in this process
_written: Dict[tuple, str] = {}  # (path, size) -> SHA-256 computed while the file was written


def remember(file: Path, sha256: str) -> None:
    """The full hash of a file just written (by a writer that hashed its bytes on the way)."""
    _written[(str(file), file.stat().st_size)] = sha256


def full_hash(file: Path) -> str:
    hasher = hashlib.sha256()
    with file.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                return hasher.hexdigest()
            hasher.update(chunk)


def sampled_hash(file: Path, size: int) -> str:
    """A hash of the file's head and of SAMPLES blocks spread over it (positions depend on size only)."""
    hasher = hashlib.sha256(str(size).encode())
    with file.open("rb") as handle:
        hasher.update(handle.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            span = size - BLOCK
            for i in range(SAMPLES):
                handle.seek(span * i // max(1, SAMPLES - 1))
                hasher.update(handle.read(BLOCK))
    return hasher.hexdigest()


def _files(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)


def record(folder: Path) -> None:
    """Write `folder`'s manifest. Files hashed while written (`remember`: the streaming
    safetensors writer) are not read back in full."""
    entries = {}
    for file in _files(folder):
        stat = file.stat()
        entries[file.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                              "sha256": _written.pop((str(file), stat.st_size), None) or full_hash(file),
                              "sampled": sampled_hash(file, stat.st_size)}
    _write_manifest(folder, entries)


def _write_manifest(folder: Path, entries: Dict[str, dict]) -> None:
    temporary = folder / f".{MANIFEST}.{os.getpid()}"
    temporary.write_text(json.dumps({"format": 1, "files": entries}, indent=1, sort_keys=True))
    os.replace(temporary, folder / MANIFEST)


def problem(folder: Path) -> Optional[str]:
    """None when every file of the entry is as written, else what is wrong (naming the file)."""
    try:
        entries = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder} has no readable {MANIFEST} (written by an interrupted or older mi-dsl)"
    present = {p.name for p in _files(folder)}
    if set(entries) != present:
        missing, extra = sorted(set(entries) - present), sorted(present - set(entries))
        return f"{folder}: files {'missing: ' + ', '.join(missing) if missing else ''}" \
               f"{'; ' if missing and extra else ''}{'unexpected: ' + ', '.join(extra) if extra else ''}"
    full = os.environ.get(VERIFY_ENV, "").strip().lower() == "full"
    refreshed = False
    for name, expected in sorted(entries.items()):
        file = folder / name
        stat = file.stat()
        if stat.st_size != expected["size"]:
            how = "truncated" if stat.st_size < expected["size"] else "extended"
            return (f"{file} is {stat.st_size} bytes but {expected['size']} were written ({how})")
        if sampled_hash(file, stat.st_size) != expected["sampled"]:
            return f"{file} differs from what was written (sampled checksum)"
        identity = (str(file), stat.st_size, stat.st_mtime_ns)
        if stat.st_mtime_ns != expected["mtime_ns"] or (full and identity not in _fully_verified):
            if full_hash(file) != expected["sha256"]:
                return f"{file} differs from what was written (SHA-256; modified at {stat.st_mtime_ns} ns)"
            _fully_verified.add(identity)
            if stat.st_mtime_ns != expected["mtime_ns"]:
                expected["mtime_ns"], refreshed = stat.st_mtime_ns, True
    if refreshed:
        try:
            _write_manifest(folder, entries)
        except OSError:  # a read-only cache: the next start hashes again, nothing worse
            pass
    return None
