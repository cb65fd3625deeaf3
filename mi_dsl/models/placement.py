"""Models larger than one device: where each module goes, and accelerate's dispatch.

`model.device_map` (auto, balanced or a mapping) and `model.n_devices` become an
accelerate device map; the model (loaded on the CPU) is dispatched over it before the
TransformerBridge boots, which reads the map (`cfg.device`: the embedding's device).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import RunError
from .model_spec import ModelSpec
from ..errors import first_line


def device_placement(spec: ModelSpec, hf_model, dtype) -> Optional[Dict[str, Any]]:
    """The accelerate device map for `spec.device_map` / `n_devices`, or None for one device.

    `auto` and `balanced` ask accelerate where the layers fit on the GPUs (no block is
    split); with no GPU the model simply loads on the CPU. A mapping is used as given.
    """
    import torch

    if isinstance(spec.device_map, tuple):
        return {name: device for name, device in spec.device_map}
    if spec.device_map is None and spec.n_devices <= 1:
        return None
    if not torch.cuda.is_available():
        if spec.n_devices > 1:
            raise RunError(f"model.n_devices is {spec.n_devices} but this machine has no usable CUDA GPU",
                           hint="remove n_devices, or use device_map: auto (the CPU when there is no GPU)")
        return None
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    count = spec.n_devices if spec.n_devices > 1 else torch.cuda.device_count()
    if count > torch.cuda.device_count():
        raise RunError(f"model.n_devices is {count} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    no_split = list(getattr(hf_model, "_no_split_modules", None) or [])
    budget = {i: int(torch.cuda.mem_get_info(i)[0] * 0.85) for i in range(count)}  # room for activations
    if spec.device_map == "balanced" or spec.n_devices > 1:
        budget = get_balanced_memory(hf_model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    placement = infer_auto_device_map(hf_model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    if any(str(d) in ("cpu", "disk") for d in placement.values()):
        raise RunError(f"the model does not fit the {count} GPU(s): accelerate would offload layers to the CPU, "
                       "which TransformerBridge does not run mixed with GPUs",
                       hint="use more GPUs (n_devices), dtype: bfloat16, or a smaller model")
    return placement


def dispatch(hf_model, placement: Dict[str, Any]):
    """Place each module on its device; accelerate's hooks move activations between them.

    force_hooks: the hooks run even when every module sits on one device, so a CPU-only
    machine runs the same dispatched path as a multi-GPU one.
    """
    from accelerate import dispatch_model

    try:
        return dispatch_model(hf_model, device_map=placement, force_hooks=True)
    except (ValueError, KeyError, RuntimeError) as err:
        raise RunError(f"device_map: {first_line(err)}",
                       hint="name modules as the model does (e.g. model.embed_tokens, model.layers.0, "
                            "model.norm, lm_head) and give each parameter a device") from None

