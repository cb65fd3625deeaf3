"""The process environment of a model load: offline mode, device, dtype, quiet libraries."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

from ..errors import RunError


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
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise RunError(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} was asked for but this machine has no usable CUDA GPU",
                       hint="use `device: auto` (CUDA when present, else the CPU) or `device: cpu`")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} does not exist: this machine has "
                       f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise RunError(f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}")
    return getattr(torch, name)


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
