"""The process environment of a model load: offline mode, device, dtype, quiet libraries."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from ..errors import Location, RunError


DTYPES = ("float32", "bfloat16", "float16")


def online() -> bool:
    return os.environ.get("MI_DSL_ONLINE") == "1"


def go_offline() -> None:
    """HF_HUB_OFFLINE=1 unless MI_DSL_ONLINE=1, so nothing waits on an unreachable hub."""
    if online():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before us: it read the variable already
        constants.HF_HUB_OFFLINE = True


def in_hub_cache(name: str, filename: str) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename)
    except Exception:  # an invalid repo id is simply not cached
        return None
    return found if isinstance(found, str) else None


def torch_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    field = Location(path="model.device")  # the spec field these faults are about (run.py locates it)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise RunError(f"unknown device {name!r}", field, hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} was asked for but this machine has no usable CUDA GPU", field,
                       hint="use `device: auto` (CUDA when present, else the CPU) or `device: cpu`")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} does not exist: this machine has "
                       f"{torch.cuda.device_count()} CUDA device(s)", field)
    return device


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise RunError(f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}")
    return getattr(torch, name)


@contextmanager
def collector_paused() -> Iterator[Callable[[], None]]:
    """Python's cyclic garbage collector off for the block (and on again after, if it was on).

    A model load imports torch, transformers and TransformerLens and builds the model: hundreds
    of thousands of long-lived objects, whose growth made the collector run a full pass over all
    of them seven times during a warm start of the embedded Gemma (0.8 s of a 7 s start). They
    are not garbage; a cycle the load leaves behind is collected by a pass after the block.

    A whole run may call the yielded `loaded()` once the model is ready: it freezes every object
    alive then (gc.freeze: the modules, the model; later passes skip them) and turns the collector
    back on; the block's end unfreezes them, so nothing stays exempt. Turning the collector on
    without freezing costs one pass over every object the load made (0.3 s after the embedded
    Gemma's load), and each later full pass would scan them again."""
    import gc

    was_on = gc.isenabled()
    gc.disable()
    froze = False

    def loaded() -> None:
        nonlocal froze
        gc.freeze()
        froze = True
        if was_on:
            gc.enable()
    try:
        yield loaded
    finally:
        if froze:
            gc.unfreeze()
        if was_on:
            gc.enable()


@contextmanager
def quiet() -> Iterator[None]:
    """No progress bars or warnings from transformers / TransformerLens; errors still raise."""
    import logging
    import warnings

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    loggers = [logging.getLogger(), logging.getLogger("transformer_lens")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
