"""Each model source's weights as a transformers model (the sources in models/sources.py call these).

One loader per source; each returns `Weights` for the common boot step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import FileAccessError, RunError
from .model_spec import EMBEDDED_MODELS, ModelSpec
from . import cache
from .environment import in_hub_cache, online
from .files import (required_name, assembled_embedded, convert_gguf, embedded_name, embedded_package, existing_dir,
                    existing_file, first_line, smollm2_file)


EMBEDDED_NAME = EMBEDDED_MODELS["gemma-3-270m"].hub_name
SMOLLM2_NAME = EMBEDDED_MODELS["smollm2-135m"].hub_name
# The name a GGUF model's bridge is booted with when the spec gives no `model.name`. The
# bridge picks its adapter from the model's config (`architectures`); the name is only
# recorded (bridge.cfg.model_name), so an unknown architecture falls back to the file's stem.


GGUF_HUB_NAMES = {"gemma3_text": EMBEDDED_NAME, "gemma3": EMBEDDED_NAME}


OFFLINE_HINT = ("use `source: embedded` (Gemma-3-270m ships with mi-dsl) or `source: local` "
                 "with `path:` a model directory; set MI_DSL_ONLINE=1 to allow downloads")


@dataclass
class Weights:
    """What a source hands to the common boot step."""

    hf_model: Any
    hub_name: str
    info: Dict[str, Any]
    cached: bool = False
    weights_key: Optional[str] = None  # set when processed weights may be cached


def preflight_local(spec: ModelSpec) -> None:
    path = existing_dir(spec.path, "model directory")
    if not (path / "config.json").is_file():
        raise FileAccessError(f"model directory '{path}' has no config.json",
                              hint="point `model.path` at a Hugging Face model directory "
                                   "(config.json and weights), or use `source: gguf` for a .gguf file")


def preflight_pretrained(spec: ModelSpec) -> None:
    name = required_name(spec)
    if not online() and not in_hub_cache(name, "config.json"):
        raise RunError(f"model '{name}' is not in the local Hugging Face cache and this machine "
                       "is offline", hint=OFFLINE_HINT)


def preflight_embedded(spec: ModelSpec) -> None:
    if embedded_name(spec) == "smollm2-135m":
        smollm2_file()


def load_embedded(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    if embedded_name(spec) == "smollm2-135m":
        return _embedded_smollm2(root, dtype, say)
    package = embedded_package()
    key = cache.digest("embedded", package.EXPECTED_SHA256)
    model_dir = cache.entry(root, "models", key)
    cached = cache.ready(model_dir)
    if not cached:
        with assembled_embedded(package, say) as gguf:
            convert_gguf(gguf, model_dir, say)
    info = {"id": f"embedded:{package.MODEL_NAME}", "source": "embedded", "name": EMBEDDED_NAME,
            "path": package.MODEL_NAME, "weights": str(model_dir)}
    return Weights(from_dir(model_dir, dtype), EMBEDDED_NAME, info, cached, key)


def _embedded_smollm2(root, dtype, say) -> Weights:
    path = smollm2_file()
    key = cache.digest("embedded-smollm2", cache.file_fingerprint(path))
    model_dir = cache.entry(root, "models", key)
    cached = cache.ready(model_dir)
    if not cached:
        convert_gguf(path, model_dir, say)
    info = {"id": "embedded:smollm2-135m", "source": "embedded", "name": SMOLLM2_NAME,
            "path": path.name, "weights": str(model_dir)}
    return Weights(from_dir(model_dir, dtype), SMOLLM2_NAME, info, cached, key)


def load_gguf(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    path = existing_file(spec.path, "GGUF file")
    key = cache.digest("gguf", cache.file_fingerprint(path))
    model_dir = cache.entry(root, "models", key)
    cached = cache.ready(model_dir)
    if not cached:
        convert_gguf(path, model_dir, say)
    hf_model = from_dir(model_dir, dtype)
    model_type = hf_model.config.model_type
    name = spec.name or GGUF_HUB_NAMES.get(model_type) or f"gguf/{path.stem}"
    info = {"id": f"gguf:{path}", "source": "gguf", "path": str(path), "name": name,
            "weights": str(model_dir)}
    return Weights(hf_model, name, info, cached, key)


def load_local(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    path = existing_dir(spec.path, "model directory")
    say(f"loading {path}")
    hf_model = from_dir(path, dtype)
    name = spec.name or str(path)
    return Weights(hf_model, name, {"id": f"local:{path}", "source": "local", "path": str(path)})


def load_pretrained(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    name = required_name(spec)
    say(f"loading {name}")
    try:
        hf_model = from_dir(name, dtype)
    except (OSError, ValueError) as err:
        raise RunError(f"model '{name}' could not be loaded from the local Hugging Face cache "
                       f"(offline): {first_line(err)}", hint=OFFLINE_HINT) from None
    return Weights(hf_model, name, {"id": f"pretrained:{name}", "source": "pretrained", "name": name})


def load_random(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    from . import random_weights

    shape = random_weights.shape_for(spec.architecture, spec.size)
    say(f"building a random {spec.architecture} ({spec.size}, seed {spec.seed})")
    hf_model = random_weights.build(shape, len(tokenizer), spec.seed).to(dtype)
    info = {"id": f"random:{spec.architecture}/{spec.size}/seed{spec.seed}", "source": "random",
            "name": shape.hub_name, "seed": spec.seed}
    return Weights(hf_model, shape.hub_name, info)




def from_dir(name_or_dir, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(name_or_dir), dtype=dtype,
                                                local_files_only=not online())
