"""Each model source's weights as a transformers model (the sources in models/sources.py call these).

One loader per source; each returns `Weights` for the common boot step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import FileAccessError, RunError, first_line
from .model_spec import EMBEDDED_MODELS, ModelSpec
from . import cache
from .environment import in_hub_cache, online
from .embedded import embedded_name, embedded_package, smollm2_file
from .files import (required_name, embedded_model_entry, existing_dir, existing_file, gguf_model_entry,
                    smollm2_model_entry)
from .gguf_job import Job, run as convert_in_job


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
    processed_key: Optional[str] = None  # the processed weights' cache key, once enable_compatibility made it


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
    model_dir = embedded_model_entry(root, package)
    cached = _converted(model_dir, None, say)
    info = {"source": "embedded", "name": EMBEDDED_NAME,
            "path": package.MODEL_NAME, "weights": str(model_dir)}
    return Weights(from_dir(model_dir, dtype), EMBEDDED_NAME, info, cached, model_dir.name)


def _converted(model_dir, gguf, say) -> bool:
    """Make the model entry of a GGUF (None: the embedded Gemma) exist; True when it was cached
    before this run (a tokenizer's conversion earlier in this run may have made it: gguf_job.py)."""
    made_here = not cache.ensure(model_dir, lambda scratch: convert_in_job(
        Job(str(gguf) if gguf is not None else None, model_scratch=str(scratch)), say), say)
    return not (made_here or cache.take_built(model_dir))


def _embedded_smollm2(root, dtype, say) -> Weights:
    path = smollm2_file()
    model_dir = smollm2_model_entry(root, path)
    cached = _converted(model_dir, path, say)
    info = {"source": "embedded", "name": SMOLLM2_NAME,
            "path": path.name, "weights": str(model_dir)}
    return Weights(from_dir(model_dir, dtype), SMOLLM2_NAME, info, cached, model_dir.name)


def load_gguf(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    path = existing_file(spec.path, "GGUF file")
    model_dir = gguf_model_entry(root, path)
    cached = _converted(model_dir, path, say)
    hf_model = from_dir(model_dir, dtype)
    model_type = hf_model.config.model_type
    name = spec.name or GGUF_HUB_NAMES.get(model_type) or f"gguf/{path.stem}"
    info = {"source": "gguf", "path": str(path), "name": name,
            "weights": str(model_dir)}
    return Weights(hf_model, name, info, cached, model_dir.name)


def load_local(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    path = existing_dir(spec.path, "model directory")
    say(f"loading {path}")
    try:
        hf_model = from_dir(path, dtype)
    except (OSError, ValueError) as err:  # an unknown architecture, custom code, missing weights
        raise RunError(f"the model directory '{path}' could not be loaded: {first_line(err)}",
                       hint="mi-dsl loads architectures transformers supports natively; it never runs a "
                            "model folder's own code (trust_remote_code)") from None
    name = spec.name or str(path)
    return Weights(hf_model, name, {"source": "local", "path": str(path)})


def load_pretrained(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    name = required_name(spec)
    say(f"loading {name}")
    try:
        hf_model = from_dir(name, dtype)
    except (OSError, ValueError) as err:
        raise RunError(f"model '{name}' could not be loaded from the local Hugging Face cache "
                       f"(offline): {first_line(err)}", hint=OFFLINE_HINT) from None
    return Weights(hf_model, name, {"source": "pretrained", "name": name})


def load_random(spec: ModelSpec, root, dtype, say, tokenizer) -> Weights:
    from . import random_weights

    shape = random_weights.shape_for(spec.architecture, spec.size)
    say(f"building a random {spec.architecture} ({spec.size}, seed {spec.seed})")
    hf_model = random_weights.build(shape, len(tokenizer), spec.seed).to(dtype)
    info = {"source": "random",
            "name": shape.hub_name, "seed": spec.seed}
    return Weights(hf_model, shape.hub_name, info)




def from_dir(name_or_dir, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(name_or_dir), dtype=dtype,
                                                local_files_only=not online())
