"""Was the machine quiet while a cell was timed? The CPU that *other* processes used meanwhile.

compbench's own timings never overlap (``common.locks.machine_timing_lock``), but anything else on
the machine (a training job, a browser, another benchmark) slows a timing without a trace. The
watch reads the machine's busy CPU time (``/proc/stat``) and this process's own (``os.times``)
around the block: the difference, per second of wall time, is the cores others kept busy. A row
measured while others used more than ``BUSY_CORES`` says so and is not cached, so the next run
measures it again. The load average before and after is recorded too (it lags by about a minute).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

BUSY_CORES = 0.5          # other processes' average use above this: the machine was not quiet ...
BUSY_CORES_ENV = "COMPBENCH_BUSY_CORES"    # ... unless this says otherwise (a machine that is never quiet)


def busy_cores() -> float:
    """Other processes' average use (cores) above which a measurement is flagged busy and not cached."""
    try:
        return float(os.environ.get(BUSY_CORES_ENV, BUSY_CORES))
    except ValueError:
        return BUSY_CORES
PROC_STAT = Path("/proc/stat")


def _busy_seconds() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (Linux), or None."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice: busy = user + nice + system + irq + softirq
    # (steal is the hypervisor's, not a process on this machine; guest is already counted in user and nice)
    ticks = [int(value) for value in fields[1:8]]
    busy = sum(ticks[:3]) + sum(ticks[5:7])
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class LoadWatch:
    """``with LoadWatch() as watch: ...`` then ``watch.summary()``: the machine's load around the block."""

    def __enter__(self) -> "LoadWatch":
        self.load_before = _load_average()
        self.start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc) -> None:
        self.end = (time.perf_counter(), _busy_seconds(), _own_seconds())
        self.load_after = _load_average()

    def other_cores(self) -> float | None:
        """Cores other processes kept busy on average during the block (None where unknown)."""
        (wall0, busy0, own0), (wall1, busy1, own1) = self.start, self.end
        if busy0 is None or busy1 is None or wall1 <= wall0:
            return None
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))

    def summary(self) -> dict:
        """The row's ``machine_load``: ``quiet`` is None where the machine cannot tell."""
        others = self.other_cores()
        return {"other_cores": None if others is None else round(others, 3),
                "load_avg_before": self.load_before, "load_avg_after": self.load_after,
                "quiet": None if others is None else others <= busy_cores()}
