"""Measuring a command as the benchmarks do: wall and CPU seconds, the peak RSS of its process tree
(sampled every 0.1 s), the load average before and after (benchmarks/fast_by_default.py)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS"):
                    total += int(line.split()[1]) * 1024
            stack += [int(c) for c in open(f"/proc/{p}/task/{p}/children").read().split()]
        except OSError:
            pass
    return total


def run_sampled(argv, env=None) -> dict:
    """Run a command; wall seconds, peak RSS of its process tree (sampled every 0.1 s), its CPU
    seconds, the load average before and after, and its stderr lines."""
    before, started = load(), time.perf_counter()
    cpu0 = os.times()
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    proc.wait()
    sampler.join()
    cpu1 = os.times()
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round((cpu1.children_user + cpu1.children_system)
                           - (cpu0.children_user + cpu0.children_system), 1),
            "peak_rss_gb": round(peak[0] / 2**30, 2), "load_before": before, "load_after": load(),
            "output": output.splitlines()}


