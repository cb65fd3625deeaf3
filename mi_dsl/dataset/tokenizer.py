"""Tokenizers without weights, for compiling datasets before any model loads.

Reads a `tokenizer.json` with the Rust `tokenizers` library: no torch, no
transformers (except the one-time conversion of a GGUF's tokenizer, cached on disk).
BOS handling is explicit: we encode without special tokens and prepend the BOS id
ourselves when the spec says `prepend_bos: true`.
"""
from __future__ import annotations

import json
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from ..errors import FileAccessError, Location, MiError, RunError
from ..models.model_spec import KNOWN_BOS, ModelSpec
from ..models.sources import SOURCES
from .token_memo import TokenMemo


class TokenizerUnavailable(Exception):
    """No tokenizer can be had offline; `validate` reports tokenizer checks as skipped."""


class Tokenizer:
    """A tokenizer.json's answers, as mi-dsl asks them: ids without special tokens, offsets, token texts.

    Every answer goes through a `TokenMemo` (token_memo.py): asked twice, computed once. A big
    tokenizer's memo comes from the cache, and then the file is parsed (`backend`) only when a
    question is not in it."""

    def __init__(self, parse: Callable[[], Any], bos_id: Optional[int], origin: str,
                 directory: Optional[str] = None, content: Optional[str] = None, file: Optional[str] = None,
                 memo: Optional[TokenMemo] = None):
        self._parse, self._backend = parse, None
        self.bos_id = bos_id
        self.origin = origin            # what it was loaded from, for reports
        self.directory = directory      # a Hugging Face tokenizer directory, when there is one
        self.content = content          # its file's fingerprint (size, mtime, head): stored results' keys hold it
        self.file = file                # the tokenizer.json it was read from
        self.memo = memo if memo is not None else TokenMemo()

    @property
    def backend(self):
        """The `tokenizers.Tokenizer`, parsed on first use."""
        return self.parse()

    def parse(self):
        if self._backend is None:
            self._backend = self._parse()
        return self._backend

    @property
    def parsed(self) -> bool:
        return self._backend is not None

    def encode(self, text: str) -> List[int]:
        return self._encode(text)[0]

    def encode_with_offsets(self, text: str) -> Tuple[List[int], List[Tuple[int, int]]]:
        return self._encode(text)

    def _encode(self, text: str):
        known = self.memo.encoding(text)
        if known is None:
            enc = self.backend.encode(text, add_special_tokens=False)
            known = self.memo.add_encoding(text, enc.ids, enc.offsets)
        ids, offsets = known
        return list(ids), list(offsets)

    def token_str(self, token_id: int) -> str:
        token_id = int(token_id)
        known = self.memo.strings.get(token_id)
        if known is None:
            known = self.backend.decode([token_id], skip_special_tokens=False)
            self.memo.add_string(token_id, known)
        return known

    def token_strs(self, ids) -> List[str]:
        return [self.token_str(i) for i in ids]

    def token_to_id(self, token: str) -> Optional[int]:
        if token not in self.memo.ids:
            self.memo.add_id(token, self.backend.token_to_id(token))
        return self.memo.ids[token]

    @property
    def vocab_size(self) -> int:
        if self.memo.vocab_size is None:
            self.memo.set_vocab_size(self.backend.get_vocab_size(with_added_tokens=True))
        return self.memo.vocab_size

    def remember(self) -> None:
        """Keep what was asked for the next run (a big tokenizer's memo file; token_memo.py)."""
        self.memo.save()


def _read_bos(directory: Path) -> Optional[str]:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = directory / name
        if file.exists():
            try:
                bos = json.loads(file.read_text()).get("bos_token")
            except (OSError, ValueError):
                continue
            if isinstance(bos, dict):
                bos = bos.get("content")
            if isinstance(bos, str):
                return bos
    return None


def _from_file(file: Path, bos_text: Optional[str], origin: str, directory: Optional[Path]) -> Tokenizer:
    from ..models.cache import file_fingerprint

    try:
        fingerprint = file_fingerprint(file)
    except OSError as err:
        raise FileAccessError(f"cannot read tokenizer file '{file}': {err.strerror or err}") from None
    memo = TokenMemo.for_file(file, fingerprint)
    tokenizer = Tokenizer(partial(_parse, file), None, origin, str(directory) if directory else None,
                          fingerprint, str(file), memo)
    if not memo.loaded:  # never parsed with this fingerprint: parse now, so a bad file fails here, located
        tokenizer.parse()
    if bos_text is None and directory is not None:
        bos_text = _read_bos(directory)
    candidates = [bos_text] if bos_text else list(KNOWN_BOS)
    tokenizer.bos_id = next((tokenizer.token_to_id(t) for t in candidates if tokenizer.token_to_id(t) is not None),
                            None)
    return tokenizer


def _parse(file: Path):
    from tokenizers import Tokenizer as RustTokenizer

    try:
        return RustTokenizer.from_file(str(file))
    except Exception as err:  # the tokenizers library raises plain Exceptions
        raise FileAccessError(f"cannot read tokenizer file '{file}': {err}",
                              hint="give a Hugging Face tokenizer.json (JSON written by the tokenizers "
                                   "library)") from None


def _hub_cached_dir(name: str) -> Optional[Path]:
    """The local Hugging Face cache's snapshot dir holding `name`'s tokenizer.json, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name, "tokenizer.json")
    except Exception:  # huggingface_hub refuses a malformed repo id: it is not in the cache either
        return None
    return Path(found).parent if isinstance(found, str) else None


def load_tokenizer(spec: ModelSpec, bos_token: Optional[str] = None,
                   where: Location = Location()) -> Tokenizer:
    """The tokenizer the spec's model uses (raises TokenizerUnavailable when offline-absent).

    Faults are located at `where`, which is not part of the cache's key."""
    try:
        default = SOURCES[spec.source].tokenizer_default(spec) if spec.source in SOURCES else None
        found = _load_cached(spec.tokenizer, spec.source, spec.name, spec.path, default, bos_token)
        if _changed_on_disk(found):  # a long-lived process (a notebook) reads a file saved again anew
            _load_cached.cache_clear()
            found = _load_cached(spec.tokenizer, spec.source, spec.name, spec.path, default, bos_token)
        return found
    except MiError as err:
        raise err.at(where) from None


def _changed_on_disk(tokenizer: Tokenizer) -> bool:
    from ..models.cache import file_fingerprint

    if tokenizer.file is None:
        return False
    try:
        return file_fingerprint(Path(tokenizer.file)) != tokenizer.content
    except OSError:  # gone: reading it again says so, located
        return True


@lru_cache(maxsize=8)
def _load_cached(tokenizer, source, name, path, default, bos_token) -> Tokenizer:
    """`default`: where the source takes its tokenizer when the spec names none (models/sources.py)."""
    ref = tokenizer
    if ref is None:
        if default in ("embedded", "gguf"):
            return _from_gguf(default, path if default == "gguf" else None, bos_token,
                              name if source == "embedded" else None)
        ref = {"path": path, "name": name}.get(default)
    if ref is None:
        raise RunError("this model needs `model.tokenizer` (a tokenizer.json, a directory or a hub id)")
    return _from_reference(ref, bos_token)


def _from_reference(ref: str, bos_token: Optional[str]) -> Tokenizer:
    path = Path(ref)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileAccessError(f"tokenizer file '{ref}' does not exist")
        return _from_file(path, bos_token, str(path),
                          path.parent if (path.parent / "tokenizer_config.json").exists() else None)
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise FileAccessError(f"tokenizer directory '{ref}' has no tokenizer.json")
        return _from_file(path / "tokenizer.json", bos_token, str(path), path)
    if ref.startswith((".", "/")):
        raise FileAccessError(f"tokenizer path '{ref}' does not exist")
    cached = _hub_cached_dir(ref)
    if cached is None:
        raise TokenizerUnavailable(f"the tokenizer of '{ref}' is not in the local Hugging Face cache "
                                   "and this machine is offline")
    return _from_file(cached / "tokenizer.json", bos_token, ref, cached)


def _from_gguf(source: str, path: Optional[str], bos_token: Optional[str], name: Optional[str] = None) -> Tokenizer:
    # Converting a GGUF's tokenizer needs transformers (once); the result is cached as tokenizer.json.
    from ..models import tokenizer_dir_for

    directory = Path(tokenizer_dir_for(ModelSpec(source=source, path=path, name=name)))
    return _from_file(directory / "tokenizer.json", bos_token, f"{source}:{path or name or 'gemma-3-270m'}",
                      directory)
