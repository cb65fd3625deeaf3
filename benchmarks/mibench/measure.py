"""Wall time (synchronised), CPU time and peak memory of one piece of work."""
from __future__ import annotations

import os
import re
import resource
import time


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Meter:
    """Times a call; on GPU the peak is max_memory_allocated, on CPU the peak RSS (reset per call
    through /proc/self/clear_refs where Linux allows, so it includes the resident weights)."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"
        self.can_reset_rss = self._reset_rss()
        self.last_peak_mb = None
        self.last_cpu_seconds = 0.0

    def _reset_rss(self) -> bool:
        try:  # Linux: "5" resets the peak RSS (VmHWM, ru_maxrss) to the current RSS
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn):
        """(seconds, fn()) with the peak memory of the call in self.last_peak_mb."""
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.can_reset_rss = self._reset_rss()
        self.sync()
        cpu = cpu_seconds()
        started = time.perf_counter()
        with self.torch.no_grad():
            out = fn()
        self.sync()
        seconds = time.perf_counter() - started
        self.last_cpu_seconds = cpu_seconds() - cpu
        if self.cuda:
            self.last_peak_mb = self.torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.last_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return seconds, out

    def resident_mb(self) -> float:
        if self.cuda:
            return self.torch.cuda.memory_allocated(self.device) / 2**20
        with open("/proc/self/status") as fh:
            found = re.search(r"VmRSS:\s+(\d+)", fh.read())
        return int(found.group(1)) / 1024 if found else float("nan")
