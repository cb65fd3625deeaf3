"""Where a run's numbers came from: spec hash, model, package versions, seed, device."""
from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Dict

PACKAGES = ("mi-dsl", "torch", "transformer-lens", "transformers", "tokenizers", "gguf", "plotly")


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(spec, plan, loaded, tokenizer) -> Dict[str, Any]:
    import torch

    device = loaded.device
    return {
        "spec_hash": spec.hash(),
        "spec_file": spec.file,
        "overrides": list(spec.overrides),
        "model": loaded.info,
        "model_spec": plan.model.identity(),
        "tokenizer": tokenizer.origin,
        "seed": spec.seed,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "versions": versions(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
