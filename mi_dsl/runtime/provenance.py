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
    """`loaded`: the run's LoadedModel, or None when every step came from the store (the model was
    never loaded: its id and fingerprint, as the store's keys read them, and the device the spec names)."""
    import torch

    if loaded is not None:
        device, model = loaded.device, loaded.info
        where = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                               f" ({platform.machine()}, {torch.get_num_threads()} threads)")
    else:
        from ..models.sources import source_of, weights_fingerprint

        model = {"id": source_of(plan.model).model_id(plan.model), "source": plan.model.source,
                 "fingerprint": weights_fingerprint(plan.model), "loaded": False}
        where = f"{plan.model.device} (not used: every step came from the store)"
    return {
        "spec_hash": spec.hash(),
        "spec_file": spec.file,
        "overrides": list(spec.overrides),
        "model": model,
        "model_spec": plan.model.identity(),
        "tokenizer": tokenizer.origin,
        "seed": spec.seed,
        "device": where,
        "versions": versions(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
