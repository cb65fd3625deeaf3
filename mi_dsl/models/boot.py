"""Boot a TransformerBridge over a transformers model, in compatibility mode."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from .model_spec import ModelSpec
from . import cache
from .processed import processed_weights
from .files import _guess_special_tokens, read_json
from .weights import Weights


def load_bridge_tokenizer(directory: str):
    """The directory's tokenizer.json as a transformers fast tokenizer.

    Built straight from tokenizer.json (twice as fast as AutoTokenizer for Gemma's
    262k vocabulary), so the bridge tokenizes exactly as mi-dsl's torch-free layer.
    `add_bos_token=True` when there is a BOS token: the bridge would otherwise reload
    the tokenizer to get one, and strips it itself for `prepend_bos=False`.
    """
    from transformers import PreTrainedTokenizerFast

    folder = Path(directory)
    config = read_json(folder / "tokenizer_config.json")
    special = {key: _token_text(config.get(key)) for key in
               ("bos_token", "eos_token", "unk_token", "pad_token")}
    special = {key: value for key, value in special.items() if value}
    if "bos_token" not in special or "eos_token" not in special:
        guessed = _guess_special_tokens(folder / "tokenizer.json")
        special = dict(guessed, **special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                        add_bos_token="bos_token" in special,
                                        name_or_path=str(folder), **special)
    if config.get("padding_side") in ("left", "right"):
        tokenizer.padding_side = config["padding_side"]
    return tokenizer


def _token_text(value) -> Optional[str]:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def boot_bridge(hub_name: str, hf_model, tokenizer, device, dtype):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(hub_name, hf_model=hf_model, tokenizer=tokenizer,
                                               device=device, dtype=dtype)


def enable_compatibility(bridge, spec: ModelSpec, weights: Weights, root, device, dtype, say) -> bool:
    """Compatibility mode with the spec's processing; True when processed weights came from the cache."""
    options = spec.processing
    if not options.enabled:
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
        return False
    flags = dict(fold_ln=options.fold_ln, center_writing_weights=options.center_writing_weights,
                 center_unembed=options.center_unembed)
    if weights.weights_key is None:
        say("processing weights")
        bridge.enable_compatibility_mode(disable_warnings=True, **flags)
        return False
    import transformer_lens
    import transformers

    key = cache.digest("processed", weights.weights_key, str(dtype), device.type, flags,
                       getattr(transformer_lens, "__version__", "?"), transformers.__version__)
    weights.processed_key = key
    with processed_weights(cache.entry(root, "processed", key), device, say) as outcome:
        bridge.enable_compatibility_mode(disable_warnings=True, **flags)
    return outcome["hit"]


def dimensions(bridge, hf_model) -> Dict[str, Any]:
    cfg = bridge.cfg
    n_heads = cfg.n_heads
    return {"n_layers": cfg.n_layers, "n_heads": n_heads,
            "n_kv_heads": getattr(cfg, "n_key_value_heads", None) or n_heads,
            "d_model": cfg.d_model, "d_head": cfg.d_head, "d_vocab": cfg.d_vocab,
            "architecture": (hf_model.config.architectures or [type(hf_model).__name__])[0]}
