"""Tiny random bridges for the circuit tests: every norm weight and bias random (not
identity, not zero), so a hook point on the wrong side of a norm or a lost bias shows."""
from __future__ import annotations

import functools

import torch

from tests.word_tokenizer import word_tokenizer_file


@functools.lru_cache(maxsize=None)
def tiny_bridge(architecture: str, seed: int = 0, processing: bool = True):
    from mi_dsl.models import boot, environment, random_weights
    from mi_dsl.models.files import tokenizer_dir_for
    from mi_dsl.spec.model import ModelSpec

    tokenizer = str(word_tokenizer_file()) if architecture in ("gpt_neox", "gpt2", "llama") else None
    spec = ModelSpec(source="random", architecture=architecture, size="tiny", seed=seed, device="cpu",
                     tokenizer=tokenizer)
    with environment.quiet():
        tok = boot.load_bridge_tokenizer(tokenizer_dir_for(spec))
        shape = random_weights.shape_for(architecture, "tiny")
        hf = random_weights.build(shape, len(tok), seed)
        _randomise(hf, seed)
        bridge = boot.boot_bridge(shape.hub_name, hf, tok, torch.device("cpu"), torch.float32)
        if processing:
            bridge.enable_compatibility_mode(disable_warnings=True)
        else:
            bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return bridge


def _randomise(model, seed: int) -> None:
    """Norm weights ~ 1 + N(0, 0.3), every bias ~ N(0, 0.2); 4x larger matrices for sharp attention."""
    gen = torch.Generator().manual_seed(1000 + seed)
    offset = "gemma" in type(model).__name__.lower()  # Gemma's RMSNorm scales by (1 + weight)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = "norm" in name or ".ln_" in name
            if is_norm and name.endswith("weight"):
                p.copy_((0.0 if offset else 1.0) + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.mul_(4.0)
