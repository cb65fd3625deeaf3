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


def provenance(session) -> Dict[str, Any]:
    import torch

    device = session.loaded.device
    return {
        "spec_hash": session.spec.hash(),
        "spec_file": session.spec.file,
        "overrides": list(session.spec.overrides),
        "model": session.loaded.info,
        "model_spec": session.plan.model.identity(),
        "tokenizer": session.tokenizer.origin,
        "seed": session.spec.seed,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "versions": versions(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
