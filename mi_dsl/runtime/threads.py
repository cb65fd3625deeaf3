"""How many CPU threads torch uses for a run (the thread policy).

In order of precedence:
1. `mi-run --threads N` (or `threads=N` in `mi_dsl.run`): exactly N.
2. The `OMP_NUM_THREADS` environment variable: that number (the OpenMP convention).
3. Otherwise, on the CPU: one thread per core that the load leaves free,
   max(1, round(cores - 1-minute load average)), at most the cores this process may use.
   On a shared 2-core machine with another job running this is 1: measured there
   (benchmarks/README.md), two OpenMP threads on two busy cores made a forward 5-15x
   slower than one, because each parallel region waits for its descheduled thread.
   On an idle machine it is every core.
4. On a GPU the CPU threads barely matter; torch's default is kept.

The choice and its reason go into the run's results (`threads`) and provenance.
"""
from __future__ import annotations

import os
from typing import Dict, Optional


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_threads(requested: Optional[int], device_type: str) -> Dict[str, object]:
    """{'threads': N or None (keep torch's default), 'reason': why}."""
    if requested is not None:
        return {"threads": max(1, int(requested)), "reason": "--threads"}
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return {"threads": int(env), "reason": "OMP_NUM_THREADS"}
    if device_type == "cuda":
        return {"threads": None, "reason": "GPU run: torch's default CPU threads"}
    cores, load = cores_available(), load_average()
    if load is None:
        return {"threads": cores, "reason": f"{cores} cores, load unknown"}
    free = max(1, min(cores, int(round(cores - load))))
    return {"threads": free, "reason": f"{cores} cores, 1-minute load {load:.2f}: {free} free"}


def apply_threads(requested: Optional[int], device_type: str) -> Dict[str, object]:
    """Choose and set torch's intra-op threads; returns the choice with the count in effect."""
    import torch

    choice = choose_threads(requested, device_type)
    if choice["threads"] is not None and torch.get_num_threads() != choice["threads"]:
        torch.set_num_threads(int(choice["threads"]))
    return dict(choice, in_effect=torch.get_num_threads())


def apply_threads_for(requested: Optional[int], device_name: str) -> Dict[str, object]:
    """apply_threads for a spec's device name (auto, cpu, cuda...); a bad name counts as the CPU
    here (the model loader reports it, with its location)."""
    from ..errors import MiError
    from ..models.environment import torch_device

    try:
        device_type = torch_device(device_name).type
    except MiError:
        device_type = "cpu"
    return apply_threads(requested, device_type)
