"""The step store: each finished step's result under a content hash of what it depends on.

A rerun of the same spec reuses finished steps, so a run killed in the middle (even by
SIGKILL) resumes where it stopped and ends with the same numbers. Keys hash the step's
inputs: the model's identity and processing, the tokenizer, the prompts, the spec
section and mi-dsl's own code (a hash of its source files, not just its version number, so
a fix to an analysis never replays a result the old code computed); anything else
changing means a new key, never a stale hit.
Writes are atomic (temporary file, then rename), so a killed write leaves nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from functools import lru_cache
from typing import Any, Optional

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


class StepStore:
    def __init__(self, folder: Path, enabled: bool = True):
        self.folder = folder
        self.enabled = enabled
        self.hits = 0      # steps reused
        self.computed = 0  # steps computed and stored

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}.json"

    def get(self, kind: str, key: str) -> Optional[Any]:
        if not self.enabled:
            return None
        path = self._path(kind, key)
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        self.computed += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(value, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path(kind, key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
