"""Model and tokenizer files: paths the spec names, model cache entries, tokenizer directories.

Everything here produces or checks files on disk (cached under `cache.cache_root()`), so
the torch-free tokenizer resolver (`dataset/tokenizer.py`) and the model loader share it.
A cached entry needs only the standard library. Converting a GGUF's tokenizer runs a child
process (gguf_job.py); converting a tokenizer directory or a hub id imports transformers here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import FileAccessError, RunError, first_line
from .model_spec import ModelSpec
from . import cache
from .embedded import embedded_name, embedded_package, smollm2_file
from .environment import in_hub_cache, online, quiet

Progress = Optional[Any]


def existing_file(path: Optional[str], what: str) -> Path:
    return _existing(path, what, Path.is_file, "a file")


def existing_dir(path: Optional[str], what: str) -> Path:
    return _existing(path, what, Path.is_dir, "a directory")


def _existing(path: Optional[str], what: str, is_kind, kind: str) -> Path:
    if not path:
        raise RunError(f"this model needs `model.path` (a {what})")
    found = Path(path).expanduser()
    if not is_kind(found):
        raise FileAccessError(f"{what} '{path}' does not exist" if not found.exists()
                              else f"{what} '{path}' is not {kind}")
    return found


def dir_fingerprint(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())


def read_json(file: Path) -> Dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# The model entries of GGUF sources (models/weights.py loads them; a tokenizer's conversion may
# make them in the same job, gguf_job.py).
def embedded_model_entry(root, package) -> Path:
    return cache.entry(root, "models", cache.digest("embedded", package.EXPECTED_SHA256))


def smollm2_model_entry(root, path: Path) -> Path:
    return cache.entry(root, "models", cache.digest("embedded-smollm2", cache.file_fingerprint(path)))


def gguf_model_entry(root, path: Path) -> Path:
    return cache.entry(root, "models", cache.digest("gguf", cache.file_fingerprint(path)))


def _embedded_tokenizer_dir(root, say, with_model: bool) -> str:
    """`with_model`: the spec loads the embedded model (a random gemma3 borrows only its tokenizer)."""
    from .gguf_job import run, tokenizer_job

    package = embedded_package()
    final = cache.entry(root, "tokenizers", cache.digest("embedded", package.EXPECTED_SHA256))
    model_entry = embedded_model_entry(root, package) if with_model else None
    cache.ensure(final, lambda scratch: run(tokenizer_job(None, scratch, model_entry), say), say)
    return str(final)


def _gguf_tokenizer_dir(path: Path, root, say, model_entry: Path) -> str:
    from .gguf_job import run, tokenizer_job

    final = cache.entry(root, "tokenizers", cache.digest("gguf", cache.file_fingerprint(path)))
    cache.ensure(final, lambda scratch: run(tokenizer_job(path, scratch, model_entry), say), say)
    return str(final)


_KNOWN_EOS = ("<eos>", "<|endoftext|>", "</s>", "<|end_of_text|>")


def _tokenizer_dir_from_reference(ref: str, root) -> str:
    path = Path(ref).expanduser()
    if path.suffix == ".json" or path.is_file():
        return _tokenizer_dir_from_file(existing_file(ref, "tokenizer file"), root)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return str(path)
        return _converted_tokenizer_dir(str(path), cache.digest("dir", str(path.resolve()),
                                        dir_fingerprint(path)), root)
    if ref.startswith((".", "/", "~")):
        raise FileAccessError(f"tokenizer path '{ref}' does not exist")
    snapshot = in_hub_cache(ref, "tokenizer.json")
    if snapshot:
        return str(Path(snapshot).parent)
    if not online():
        raise RunError(f"the tokenizer of '{ref}' is not in the local Hugging Face cache and this "
                       "machine is offline", hint="give `model.tokenizer` as a tokenizer.json file or "
                       "a tokenizer directory; set MI_DSL_ONLINE=1 to allow downloads")
    return _converted_tokenizer_dir(ref, cache.digest("hub", ref), root)


def _tokenizer_dir_from_file(file: Path, root) -> str:
    """A cached directory: a copy of `file` plus a tokenizer_config.json naming its special tokens."""
    import hashlib
    import shutil

    final = cache.entry(root, "tokenizers", cache.digest("file", hashlib.sha256(file.read_bytes()).hexdigest()))

    def build(scratch: Path) -> None:
        beside = file.parent / "tokenizer_config.json"
        config = read_json(beside) if beside.is_file() else {}
        shutil.copyfile(file, scratch / "tokenizer.json")
        config.update({k: v for k, v in _guess_special_tokens(scratch / "tokenizer.json").items()
                       if not config.get(k)})
        (scratch / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    cache.ensure(final, build)
    return str(final)


def _guess_special_tokens(file: Path) -> Dict[str, str]:
    from tokenizers import Tokenizer

    from .model_spec import KNOWN_BOS

    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as err:  # the tokenizers library raises plain Exceptions
        raise FileAccessError(f"cannot read tokenizer file '{file}': {err}") from None
    found = {}
    for key, candidates in (("bos_token", KNOWN_BOS), ("eos_token", _KNOWN_EOS)):
        hit = next((c for c in candidates if backend.token_to_id(c) is not None), None)
        if hit:
            found[key] = hit
    if backend.token_to_id("<pad>") is not None:
        found["pad_token"] = "<pad>"
    elif "eos_token" in found:
        found["pad_token"] = found["eos_token"]
    return found


def _converted_tokenizer_dir(source: str, key: str, root) -> str:
    """Save a tokenizer transformers can load (directory or hub id) as tokenizer.json, once."""
    final = cache.entry(root, "tokenizers", key)

    def build(scratch: Path) -> None:
        with quiet():
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not online())
            except (OSError, ValueError) as err:
                raise RunError(f"cannot load the tokenizer '{source}': {first_line(err)}") from None
            if not getattr(tokenizer, "is_fast", False):
                raise RunError(f"the tokenizer '{source}' has no fast (tokenizer.json) form")
            tokenizer.save_pretrained(str(scratch))
    cache.ensure(final, build)
    return str(final)


def tokenizer_dir_for(spec: ModelSpec, *, cache_root: Optional[Path] = None,
                      progress: Progress = None) -> str:
    """A directory holding the spec's tokenizer.json (and tokenizer_config.json).

    Once cached, this imports only the standard library and `tokenizers` at most (no
    torch, no transformers). Creating the entry for a GGUF (embedded or not), for a
    tokenizer directory without tokenizer.json or for a hub id imports transformers,
    which imports torch. A random gemma3 model without `tokenizer` uses the embedded
    Gemma tokenizer.
    """
    from .gguf_job import with_conversion_progress

    root = Path(cache_root) if cache_root is not None else None
    say = with_conversion_progress(progress or (lambda message: None))  # a front end passes none
    ref = spec.tokenizer
    if ref is None:
        if spec.source == "embedded" and embedded_name(spec) == "smollm2-135m":
            file = smollm2_file()
            return _gguf_tokenizer_dir(file, root, say, smollm2_model_entry(root, file))
        if spec.source == "embedded" or (spec.source == "random" and spec.architecture == "gemma3"):
            return _embedded_tokenizer_dir(root, say, with_model=spec.source == "embedded")
        if spec.source == "gguf":
            file = existing_file(spec.path, "GGUF file")
            return _gguf_tokenizer_dir(file, root, say, gguf_model_entry(root, file))
        if spec.source == "local":
            ref = str(existing_dir(spec.path, "model directory"))
        elif spec.source == "pretrained":
            ref = required_name(spec)
    if ref is None:
        raise RunError(f"a {spec.source!r} model needs `model.tokenizer`",
                       hint="give a tokenizer.json file, a tokenizer directory or a hub id")
    return _tokenizer_dir_from_reference(ref, root)


def required_name(spec: ModelSpec) -> str:
    if not spec.name:
        raise RunError("`source: pretrained` needs `model.name` (a Hugging Face model id)")
    return spec.name
