"""How busy the machine was while a benchmark ran (shared by the bench scripts).

``MachineLoad`` reads ``/proc/stat`` (whole-machine CPU time), ``os.times`` (this process and its
reaped children) and the load average before and after; ``summary()`` is one line to print with
the figures, so a ratio measured on a loaded machine says so.
"""

from __future__ import annotations

import datetime
import os
import time


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, or ``None`` off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return (total - idle) / ticks, total / ticks


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class MachineLoad:
    """Context manager: CPU use of the machine and of this benchmark during the block."""

    def __enter__(self) -> "MachineLoad":
        self.cores = os.cpu_count() or 1
        self.start = datetime.datetime.now(datetime.timezone.utc)
        self.load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self.stat0, self.own0, self.wall0 = _proc_stat(), _own_cpu(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stat1, self.own1, self.wall1 = _proc_stat(), _own_cpu(), time.monotonic()
        self.load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def summary(self) -> str:
        wall = max(self.wall1 - self.wall0, 1e-9)
        own = 100 * (self.own1 - self.own0) / (wall * self.cores)
        text = (f"measured {self.start:%Y-%m-%d %H:%M} UTC on {self.cores} cores; load average (1 min) "
                f"{self.load_before:.1f} before, {self.load_after:.1f} after")
        if self.stat0 and self.stat1:
            busy = 100 * (self.stat1[0] - self.stat0[0]) / max(self.stat1[1] - self.stat0[1], 1e-9)
            text += (f"; CPU busy {busy:.0f} % of the machine during the run: {own:.0f} % this benchmark, "
                     f"{max(busy - own, 0):.0f} % other work")
        else:
            text += f"; this benchmark used {own:.0f} % of the machine's CPU"
        return text
