"""How many CPU threads torch uses for a run (the thread policy).

In order of precedence:
1. `mi-run --threads N` (or `threads=N` in `mi_dsl.run`): exactly N, for the whole run.
2. The `OMP_NUM_THREADS` environment variable: that number (the OpenMP convention).
3. On a GPU the CPU threads barely matter; torch's default is kept.
4. Otherwise, on the CPU: one thread per core that is free *now*. What other processes use
   is measured from the kernel's per-core counters (/proc/stat) over a window, minus this
   process's own CPU time, so neither the lagging 1-minute load average nor mi-dsl's own
   previous run counts against the cores. The first window is the model's load (at least
   0.3 s); then the policy looks again before each step (the pipeline, each analysis) over
   the window since its last look, so a run adapts when another job starts or ends.
   A core counts as free when other processes leave at least 0.7 of it (`SLACK`): on the
   shared 2-core development machine two OpenMP threads on a core another job keeps busy
   were 5-20x slower than one (each parallel region waits for its descheduled thread).
   Without /proc/stat (not Linux) the 1-minute load average stands in, as before.

The choice, its reason, the measured use and every later change go into the run's results
(`threads`) and provenance.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

WINDOW = 0.3   # seconds: the shortest window a choice is measured over
SLACK = 0.3    # a core counts as free when other processes leave at least 1 - SLACK of it


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _allowed_cpus() -> Optional[Sequence[int]]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _core_ticks(cpus: Sequence[int]) -> Optional[Dict[str, int]]:
    """{'busy', 'total'} clock ticks of the given cores since boot (None without /proc/stat)."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]  # steal counts as busy: the host ran someone else
    return {"busy": busy, "total": total} if total else None


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuSample:
    """The kernel's counters at one moment; `others()` is the cores' worth of CPU time that
    processes other than this one used since then."""

    cpus: Sequence[int]
    ticks: Optional[Dict[str, int]]
    own: float
    at: float

    @classmethod
    def now(cls) -> "CpuSample":
        cpus = _allowed_cpus() or list(range(cores_available()))
        return cls(cpus, _core_ticks(cpus), _own_seconds(), time.monotonic())

    def others(self) -> Optional[float]:
        """Cores' worth used by other processes since this sample (None without counters)."""
        later = _core_ticks(self.cpus)
        if self.ticks is None or later is None:
            return None
        total = later["total"] - self.ticks["total"]
        if total <= 0:
            return None
        elapsed = max(1e-6, time.monotonic() - self.at)
        everyone = len(self.cpus) * (later["busy"] - self.ticks["busy"]) / total
        own = (_own_seconds() - self.own) / elapsed
        return max(0.0, everyone - own)

    def age(self) -> float:
        return time.monotonic() - self.at


def free_cores(cores: int, others: float) -> int:
    return max(1, min(cores, int(math.floor(cores - others + SLACK))))


def fixed_choice(requested: Optional[int], device_type: str) -> Optional[Dict[str, object]]:
    """The choice when nothing needs measuring (--threads, OMP_NUM_THREADS, a GPU), else None."""
    if requested is not None:
        return {"threads": max(1, int(requested)), "reason": "--threads"}
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return {"threads": int(env), "reason": "OMP_NUM_THREADS"}
    if device_type == "cuda":
        return {"threads": None, "reason": "GPU run: torch's default CPU threads"}
    return None


def choose_threads(requested: Optional[int], device_type: str, since: Optional[CpuSample] = None) -> Dict[str, object]:
    """{'threads': N or None (keep torch's default), 'reason': why, 'others': cores' worth
    other processes used (measured choices only)}. `since`: measure from that sample (else
    a WINDOW-long one is taken now)."""
    fixed = fixed_choice(requested, device_type)
    if fixed is not None:
        return fixed
    cores = cores_available()
    since = since or CpuSample.now()
    if since.ticks is not None and since.age() < WINDOW:
        time.sleep(WINDOW - since.age())
    window, others = since.age(), since.others()
    if others is None:
        load = load_average()
        if load is None:
            return {"threads": cores, "reason": f"{cores} cores, CPU use unknown"}
        free = free_cores(cores, load)
        return {"threads": free, "reason": f"{cores} cores, 1-minute load {load:.2f} (no per-core counters): "
                                           f"{free} free"}
    free = free_cores(cores, others)
    return {"threads": free, "others": round(others, 2),
            "reason": f"{cores} cores; other processes used {others:.2f} of them over the last {window:.1f} s: "
                      f"{free} free"}


def apply_threads(requested: Optional[int], device_type: str, since: Optional[CpuSample] = None) -> Dict[str, object]:
    """Choose and set torch's intra-op threads; returns the choice with the count in effect."""
    import torch

    choice = choose_threads(requested, device_type, since)
    if choice["threads"] is not None and torch.get_num_threads() != choice["threads"]:
        torch.set_num_threads(int(choice["threads"]))
    return dict(choice, in_effect=torch.get_num_threads())


def device_type_of(device_name: str) -> str:
    """A spec's device name (auto, cpu, cuda...) as torch's device type; a bad name counts as
    the CPU here (the model loader reports it, with its location)."""
    from ..errors import MiError
    from ..models.environment import torch_device

    try:
        return torch_device(device_name).type
    except MiError:
        return "cpu"


def apply_threads_for(requested: Optional[int], device_name: str) -> Dict[str, object]:
    """apply_threads for a spec's device name."""
    return apply_threads(requested, device_type_of(device_name))


@dataclass
class ThreadPolicy:
    """The policy over one run: `start()` before the model loads, `apply(step)` before each
    step. Only a measured choice (no --threads, no OMP_NUM_THREADS, the CPU) is revisited;
    `record()` is what results.json keeps."""

    requested: Optional[int]
    device_type: str
    first: Dict[str, object] = field(default_factory=dict)
    changes: List[Dict[str, object]] = field(default_factory=list)
    sample: Optional[CpuSample] = None

    def start(self) -> None:
        """Begin the first window; a fixed count (--threads, OMP_NUM_THREADS, a GPU) applies at once."""
        self.sample = CpuSample.now()
        if fixed_choice(self.requested, self.device_type) is not None:
            self.first = apply_threads(self.requested, self.device_type)

    def apply(self, step: str) -> Dict[str, object]:
        """Set the threads for `step` (the window since the last look; one shorter than WINDOW
        after a quick step keeps the count and goes on accumulating, so no step waits)."""
        if self.first and (not self.adaptive or self.sample is None or self.sample.age() < WINDOW):
            return self.first
        choice = apply_threads(self.requested, self.device_type, self.sample)
        self.sample = CpuSample.now()
        if not self.first:
            self.first = choice
        elif choice["in_effect"] != self.current:
            self.changes.append({"step": step, "threads": choice["in_effect"], "others": choice.get("others")})
        return choice

    @property
    def adaptive(self) -> bool:
        return fixed_choice(self.requested, self.device_type) is None

    @property
    def current(self) -> object:
        return self.changes[-1]["threads"] if self.changes else self.first.get("in_effect")

    def record(self) -> Dict[str, object]:
        return dict(self.first, changes=list(self.changes)) if self.changes else dict(self.first)
