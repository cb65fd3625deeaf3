"""The step store: each finished step's result under a content hash of what it depends on.

A rerun of the same spec reuses finished steps, so a run killed in the middle (even by
SIGKILL) resumes where it stopped and ends with the same numbers. Keys hash the step's
inputs: the model's identity and processing, the tokenizer, the prompts, the spec
section and mi-dsl's own code (a hash of its source files, not just its version number, so
a fix to an analysis never replays a result the old code computed); anything else
changing means a new key, never a stale hit.
Writes are atomic (temporary file, then rename), so a killed write leaves nothing.

Trust: a stored step is reused only if this user on this machine wrote it. Each entry
carries an HMAC-SHA256 of its name and value under a per-user key (32 random bytes in
`<cache>/keys/store.key`, mode 0600, created once; spec/README "Trust and safety"). An entry
without a valid signature (edited, copied from someone else's folder, written before
signing existed) is recomputed, never read, and the run says so in a located warning. The
key lives in the user's cache, never in a spec's folder or a runs folder; a key that is not
a regular file owned by this user and readable by nobody else signs nothing: every step is
then recomputed, with a warning saying why.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from functools import lru_cache
from typing import Any, Callable, List, Optional

from .._version import __version__


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of every mi_dsl source file: part of every key, so changed code recomputes."""
    root = Path(__file__).resolve().parents[1]
    sha = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.lark")):
        sha.update(str(path.relative_to(root)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=_plain, separators=(",", ":"))
    return hashlib.sha256(f"mi-dsl {__version__} {code_fingerprint()}|{text}".encode()).hexdigest()[:32]


def _plain(value):
    """Compiled parameters (compile/params.py) hash as what they print; anything else as its str."""
    return value.to_json() if hasattr(value, "to_json") else str(value)


ENTRY_FORMAT = 2           # {"format", "mac", "value"}; format 1 (unsigned) is never trusted
MAX_ENTRY_BYTES = 1 << 31  # a stored step is read only up to this size
KEY_BYTES = 32


def key_file() -> Path:
    from ..models.cache import cache_root

    return cache_root() / "keys" / "store.key"


def store_key() -> tuple:
    """(key bytes or None, why not): this user's signing key, created on first use."""
    path = key_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            _create_key(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        return None, f"the store's key {path} cannot be read or created ({err.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None, (f"the store's key {path} is not a regular file owned by you and readable by nobody else "
                          f"(mode {stat.filemode(info.st_mode)}); chmod 600 it, or delete it to make a new one")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        return None, f"the store's key {path} is not {KEY_BYTES} bytes; delete it to make a new one"
    return key, ""


def _create_key(path: Path) -> None:
    """Written whole under a temporary name, then linked into place: two runs starting together
    agree on one key (the second link fails and that run reads the first's)."""
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)  # mode 0600
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def _mac(key: bytes, name: str, value: Any) -> str:
    """Over the value as JSON text; `value` is always parsed JSON (put parses what it will write),
    so the writer and a reader serialise the same data to the same text."""
    text = json.dumps(value, separators=(",", ":"))
    return hmac.new(key, f"{name}|{text}".encode(), hashlib.sha256).hexdigest()


class StepStore:
    """`enabled`: read and write stored steps; `reuse=False` (a --fresh run) writes what it computes
    but reads nothing, so the next run reuses the fresh results, not what was stored before them."""

    def __init__(self, folder: Path, enabled: bool = True, reuse: bool = True):
        self.folder = folder
        self.enabled = enabled
        self.reuse = reuse
        self.hits = 0      # steps reused
        self.computed = 0  # steps computed and stored
        self.distrusted: List[str] = []  # entries found but not signed by this user's key: recomputed
        self.key, self.keyless = store_key() if enabled else (None, "")

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}.json"

    def get(self, kind: str, key: str, warn: Optional[Callable[[str], None]] = None) -> Optional[Any]:
        """The stored value, if this user's key signed it; `warn` hears why an entry found was not used."""
        if not self.enabled or not self.reuse:
            return None
        from ..errors import MiError
        from ..spec.paths import read_regular

        if self.key is None and self.keyless and warn is not None:
            warn(f"stored steps are neither reused nor kept: {self.keyless}")
            self.keyless_told, self.keyless = self.keyless, ""
        path = self._path(kind, key)
        if not os.path.lexists(path):
            return None
        try:
            entry = json.loads(read_regular(path, "stored step", limit=MAX_ENTRY_BYTES))
            value, mac = entry["value"], entry["mac"]
            trusted = (self.key is not None and entry.get("format") == ENTRY_FORMAT and isinstance(mac, str)
                       and hmac.compare_digest(mac, _mac(self.key, path.name, value)))
        except (MiError, ValueError, TypeError, KeyError):
            trusted = False
        if not trusted:
            self.distrusted.append(path.name)
            if warn is not None:
                why = (getattr(self, "keyless_told", "")
                       or "its signature is not this user's (edited, or written elsewhere)")
                warn(f"the stored {kind} step {path.name} was not used: {why}; recomputed")
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        self.computed += 1
        if self.key is None:
            return  # nothing to sign with: a later run recomputes anyway
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(kind, key)
        plain = json.loads(json.dumps(value))
        entry = {"format": ENTRY_FORMAT, "mac": _mac(self.key, path.name, plain), "value": plain}
        handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(entry, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
