"""Subspaces saved as safetensors with their provenance, and read back by a later spec.

A file holds one tensor, `W` [d, k] (orthonormal columns, float32), and string metadata: the
featurizer, the site (component, layer, hook, position, head), the variable it was trained for,
the model, the spec (file, hash), the seed, d and k, the split and its IIAs, mi-dsl's version.
The result keeps each file's bytes base64-encoded (results are JSON, the store too), so a resumed
run writes the same files; `files()` hands them to the report, which writes them into the run
directory under subspaces/<analysis id>/.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Dict, Tuple

from ...errors import FileAccessError, RunError

FORMAT = "mi-dsl subspace 1"


def encode(W, provenance: Dict[str, Any]) -> str:
    from safetensors.torch import save

    # one metadata entry: safetensors keeps metadata in a hash map, so several keys come out in any order
    # and the same subspace would not be the same bytes
    metadata = {"mi_dsl": json.dumps({"format": FORMAT, **provenance}, sort_keys=True)}
    return base64.b64encode(save({"W": W.detach().float().contiguous().cpu()}, metadata=metadata)).decode()


def files(data: Dict[str, Any]) -> Dict[str, bytes]:
    return {path: base64.b64decode(text) for path, text in (data.get("subspace_files") or {}).items()}


def load(path: str, where) -> Tuple[Any, Dict[str, Any]]:
    """(W [d, k], provenance) of a saved subspace; refuses a file that is not one."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get("mi_dsl", "{}"))
            if metadata.get("format") != FORMAT or "W" not in handle.keys():
                raise FileAccessError(f"'{path}' is not a subspace mi-dsl saved (no W tensor with format "
                                      f"'{FORMAT}')", where)
            W = handle.get_tensor("W").float()
    except FileAccessError:
        raise
    except Exception as err:  # noqa: BLE001  (safetensors raises its own types for a damaged file)
        raise FileAccessError(f"cannot read subspace file '{path}': {err}", where) from None
    provenance = {k: v for k, v in metadata.items() if k != "format"}
    if W.dim() != 2 or W.shape[1] > W.shape[0]:
        raise RunError(f"subspace '{path}' holds W of shape {list(W.shape)}, not [d, k] with k <= d", where)
    return W, provenance


def file_name(analysis_id: str, variable: str, site_label: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in site_label).strip("_")
    return f"subspaces/{analysis_id}/{variable}__{safe}.safetensors"
