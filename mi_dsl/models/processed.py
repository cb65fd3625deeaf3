"""The processed-weight cache: TransformerLens's weight processing, computed once per model.

Folding the norms and centering (fold_ln, center_writing_weights, center_unembed) takes
seconds for a model with a large vocabulary and is a pure function of the raw weights and
the flags, so its result is kept as a cache entry (`cache.entry(root, "processed", key)`,
checksummed like every entry). It is written one tensor at a time (`tensorfile.py`), and
computed under the entry's lock: a second process that needs it at the same time waits and
reads it instead of processing a second copy. Imports torch only when used.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator

from . import cache

FILE = "weights.safetensors"


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
        stored = _read(folder, signature, device)
        if stored is not None:
            outcome["hit"] = True
            return stored
        with cache.locked(folder, say):
            stored = _read(folder, signature, device)  # another process wrote it while we waited
            if stored is not None:
                outcome["hit"] = True
                return stored
            say("processing weights (cached for next time)")
            with _steps_consume_their_input():
                result = original.__func__(state_dict, cfg, **options)
            _write(folder, signature, result)
            # Serve what was just written, as a later start would: the file's tensors are memory
            # mapped, so rows no forward reads (most of a 262k-token embedding and unembedding)
            # never become resident, where the computed result held all of them in anonymous
            # memory for the whole run (1.8 GB more resident after the embedded Gemma's load).
            stored = _read(folder, signature, device)
        return result if stored is None else stored

    ProcessWeights.process_weights = staticmethod(process)
    try:
        yield outcome
    finally:
        ProcessWeights.process_weights = original


# The steps of ProcessWeights.process_weights that begin with a deep copy of the whole state
# dict ({k: v.clone() ...}) "to avoid modifying the original". process_weights itself drops
# the original as soon as the step returns, so each copy only doubled the memory: with Gemma's
# 262k-token unembedding the first processing peaked at 6.1 GB (4.5 GB inside fold_layer_norm).
_COPYING_STEPS = ("fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases",
                  "refactor_factored_attn_matrices")


@contextmanager
def _steps_consume_their_input() -> Iterator[None]:
    """While open, each copying step's opening deep copy hands back its input tensors instead of
    copies: the first `clone()` of each input tensor that shares its storage with no other input
    tensor returns the tensor itself; every other clone (a second one, a tensor sharing storage,
    any tensor the step makes) is a real copy. The steps compute the same numbers
    (tests/runtime/test_processed.py compares them bit for bit with the copying steps)."""
    import torch
    from transformer_lens.weight_processing import ProcessWeights

    real_clone = torch.Tensor.clone
    pending: set = set()

    def clone(self, *args, **kwargs):
        if id(self) in pending and not args and not kwargs:
            pending.discard(id(self))
            return self
        return real_clone(self, *args, **kwargs)

    def consuming(step):
        def run(state_dict, *args, **kwargs):
            tensors = [v for v in state_dict.values() if isinstance(v, torch.Tensor)]
            storages: Dict[int, int] = {}
            for tensor in tensors:
                key = tensor.untyped_storage().data_ptr()
                storages[key] = storages.get(key, 0) + 1
            pending.clear()
            pending.update(id(t) for t in tensors if storages[t.untyped_storage().data_ptr()] == 1)
            try:
                return step(state_dict, *args, **kwargs)
            finally:
                pending.clear()
        return staticmethod(run)

    originals = {name: ProcessWeights.__dict__[name] for name in _COPYING_STEPS if name in ProcessWeights.__dict__}
    torch.Tensor.clone = clone
    for name, original in originals.items():
        setattr(ProcessWeights, name, consuming(original.__func__))
    try:
        yield
    finally:
        torch.Tensor.clone = real_clone
        for name, original in originals.items():
            setattr(ProcessWeights, name, original)


def _signature(state_dict) -> str:
    return cache.digest(sorted((key, list(getattr(value, "shape", ())), str(getattr(value, "dtype", "")))
                               for key, value in state_dict.items()))


def _read(folder: Path, signature: str, device):
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not cache.ready(folder):  # absent, or damaged (then reported and rewritten)
        return None
    file = folder / FILE
    try:
        with safe_open(str(file), framework="pt") as handle:
            if (handle.metadata() or {}).get("signature") != signature:
                return None
        return load_file(str(file), device=str(device))
    except Exception:  # an unreadable entry is recomputed, never fatal
        return None


def _write(folder: Path, signature: str, state_dict) -> None:
    import torch

    from .tensorfile import save_tensors

    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        return
    cache.discard(folder)  # a stale entry (its signature did not match) or a damaged one
    try:
        with cache.building(folder) as scratch:
            save_tensors(state_dict, scratch / FILE, metadata={"signature": signature})
    except OSError:  # a full disk costs the next start a few seconds, not this run
        pass
