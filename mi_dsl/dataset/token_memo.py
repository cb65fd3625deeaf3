"""What a tokenizer answered, kept so a later run that asks the same skips parsing it.

Gemma's tokenizer.json is 33 MB: the `tokenizers` library takes 0.7 s to parse it, on
every `mi-run`, `validate` and `plan`, before the first prompt is compiled. A spec asks it
the same few thousand questions each time (a prompt's ids and offsets, a token's text), and
the answers are a pure function of the file's bytes and the library's version. So the answers
of a big tokenizer (`FILE_BYTES` and over) are written to the cache
(`<cache>/v2/token-memo/KEY.json`), keyed by the file's fingerprint (size, mtime, a hash of its
head), the library's version and `MEMO_VERSION`. A run whose every question is answered there
never parses the file.

The memo is written by a process that parsed the same file, so it can only be stale if the
key lies: an edited file changes its mtime, an upgraded library its version. A memo whose
payload does not match its own checksum (a damaged file) is ignored, never trusted. Writes
are atomic and best effort: the memo is a courtesy, a failed write costs the next run a parse.

`MEMO_VERSION` changes whenever what an answer means changes (how `Tokenizer` encodes).
Standard library only.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

MEMO_VERSION = 1
# Smaller tokenizers parse in well under 0.1 s (Pythia's and SmolLM2's 2 MB): not worth a file.
FILE_BYTES = 8 << 20
# A memo over this many texts keeps only what this process asked: specs change, and a memo read must
# stay well under the parse it saves (10,000 texts: ~0.1 s; 50,000: 0.4 s against 0.7 s).
MAX_TEXTS = 10_000

Encoding = Tuple[Tuple[int, ...], Tuple[Tuple[int, int], ...]]


class TokenMemo:
    """A tokenizer's answers: encodings by text, token texts by id, ids by token text, vocab size."""

    def __init__(self, path: Optional[Path] = None, key: str = ""):
        self.path, self.key = path, key     # path None: this process only
        self.encodings: Dict[str, Encoding] = {}
        self.strings: Dict[int, str] = {}
        self.ids: Dict[str, Optional[int]] = {}
        self.vocab_size: Optional[int] = None
        self.loaded = False                 # answers came from a file (its tokenizer was parsed before)
        self._asked: Set[str] = set()       # texts this process asked for
        self._dirty = False

    @classmethod
    def for_file(cls, file: Path, fingerprint: str) -> "TokenMemo":
        """The memo of tokenizer `file`: read from the cache when the file is big enough to keep one."""
        try:
            big = file.stat().st_size >= FILE_BYTES
        except OSError:
            big = False
        if not big:
            return cls()
        from ..models.cache import FORMAT, cache_root, digest

        key = digest("token-memo", MEMO_VERSION, fingerprint, _library_version())
        memo = cls(cache_root() / f"v{FORMAT}" / "token-memo" / f"{key}.json", key)
        memo._read()
        return memo

    # ------------------------------------------------------------------ answers

    def encoding(self, text: str) -> Optional[Encoding]:
        self._asked.add(text)
        return self.encodings.get(text)

    def add_encoding(self, text: str, ids: List[int], offsets: List[Tuple[int, int]]) -> Encoding:
        encoding = self.encodings[text] = (tuple(ids), tuple((int(a), int(b)) for a, b in offsets))
        self._asked.add(text)
        self._dirty = True
        return encoding

    def add_string(self, token_id: int, text: str) -> None:
        self.strings[token_id] = text
        self._dirty = True

    def add_id(self, token: str, token_id: Optional[int]) -> None:
        self.ids[token] = token_id
        self._dirty = True

    def set_vocab_size(self, size: int) -> None:
        self.vocab_size = size
        self._dirty = True

    # ------------------------------------------------------------------ the file

    def save(self) -> None:
        """Write what was learned since the memo was read (nothing when nothing was)."""
        if self.path is None or not self._dirty:
            return
        encodings = self.encodings
        if len(encodings) > MAX_TEXTS:
            encodings = {text: value for text, value in encodings.items() if text in self._asked}
        payload = {"vocab_size": self.vocab_size, "ids": self.ids,
                   "strings": {str(k): v for k, v in self.strings.items()},
                   "encodings": {text: [list(ids), [x for pair in offsets for x in pair]]
                                 for text, (ids, offsets) in encodings.items()}}
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".memo-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"version": MEMO_VERSION, "key": self.key, "sha256": _checksum(body), "body": body}, out,
                          ensure_ascii=False)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            pass  # a read-only or full cache: the next run parses the tokenizer, nothing else changes

    def _read(self) -> None:
        assert self.path is not None
        try:
            outer = json.loads(self.path.read_text(encoding="utf-8"))
            body = outer["body"]
            if outer.get("version") != MEMO_VERSION or outer.get("key") != self.key or \
                    outer.get("sha256") != _checksum(body):
                return  # another format, or damaged: ignored (and overwritten by the next save)
            payload = json.loads(body)
            encodings = {text: (tuple(ids), tuple(zip(flat[0::2], flat[1::2])))
                         for text, (ids, flat) in payload["encodings"].items()}
            strings = {int(k): v for k, v in payload["strings"].items()}
            ids, size = dict(payload["ids"]), payload["vocab_size"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        self.encodings, self.strings, self.ids, self.vocab_size = encodings, strings, ids, size
        self.loaded = True


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tokenizers")
    except PackageNotFoundError:  # a vendored copy: no version, no memo worth trusting across runs
        return f"unknown-{os.getpid()}"
