"""mi-dsl's on-disk cache: where it lives, how entries are keyed and written.

Importing it needs the standard library only (no torch), so the tokenization layer
can find a cached tokenizer without loading a model stack.

Every entry is a directory written whole: it is built under a `.partial-*` name
beside its final place and renamed into place at the end, so a run killed half-way
leaves no half entry (the next run removes stale partial directories and starts over).
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
from typing import Any, Callable, Dict, Iterator, Optional

CACHE_ENV = "MI_DSL_CACHE"
FORMAT = 1                      # bump when the layout or the conversion changes
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
    """Whether the entry was written completely (the rename is the commit)."""
    return path.is_dir()


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


# --------------------------------------------------------------------------- processed weights
# TransformerLens's weight processing (fold_ln, centering) takes seconds for a model with a
# large vocabulary and is a pure function of the raw weights and the flags, so its result
# is kept beside the converted weights. Imports torch only when used.


@contextmanager
def processed_weights(folder: Path, device, say: Callable[[str], None]) -> Iterator[Dict[str, bool]]:
    """While open, TransformerLens's weight processing is served from `folder` or fills it.

    `folder`'s name must identify the raw weights, the flags and the library versions.
    The stored result is also checked against the incoming keys, shapes and dtypes.
    The yielded dict's "hit" says whether the cache answered.
    """
    from transformer_lens.weight_processing import ProcessWeights

    original = ProcessWeights.__dict__["process_weights"]
    outcome = {"hit": False}

    def process(state_dict, cfg, **options):
        signature = _signature(state_dict)
        stored = _read_processed(folder, signature, device)
        if stored is not None:
            outcome["hit"] = True
            return stored
        say("processing weights (cached for next time)")
        result = original.__func__(state_dict, cfg, **options)
        _write_processed(folder, signature, result)
        return result

    ProcessWeights.process_weights = staticmethod(process)
    try:
        yield outcome
    finally:
        ProcessWeights.process_weights = original


def _signature(state_dict) -> str:
    return digest(sorted((key, list(getattr(value, "shape", ())), str(getattr(value, "dtype", "")))
                         for key, value in state_dict.items()))


def _read_processed(folder: Path, signature: str, device):
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = folder / "weights.safetensors"
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as handle:
            if (handle.metadata() or {}).get("signature") != signature:
                return None
        return load_file(str(file), device=str(device))
    except Exception:  # an unreadable entry is recomputed, never fatal
        return None


def _write_processed(folder: Path, signature: str, state_dict) -> None:
    import torch
    from safetensors.torch import save_file

    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        return
    tensors, storages = {}, set()
    for key, value in state_dict.items():
        value = value.detach()
        if value.untyped_storage().data_ptr() in storages or not value.is_contiguous():
            value = value.clone(memory_format=torch.contiguous_format)  # safetensors refuses sharing
        storages.add(value.untyped_storage().data_ptr())
        tensors[key] = value
    if folder.exists():  # a stale entry (its signature did not match): replace it
        shutil.rmtree(folder, ignore_errors=True)
    try:
        with building(folder) as scratch:
            save_file(tensors, str(scratch / "weights.safetensors"), metadata={"signature": signature})
    except OSError:  # a full disk costs the next start a few seconds, not this run
        pass
