"""The load watch: the CPU other processes used while a block ran (what flags a row as not quiet)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from compbench.measurement.machine_load import BUSY_CORES, LoadWatch


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_neighbour_burning_a_core_is_seen_and_our_own_work_is_not(monkeypatch):
    monkeypatch.delenv("COMPBENCH_BUSY_CORES")
    with LoadWatch() as alone:
        spin(0.5)                    # our own CPU: never counted as others'
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with LoadWatch() as busy:
            time.sleep(1.0)
    finally:
        burner.kill()
        burner.wait()
    summary = busy.summary()
    assert summary["other_cores"] > 0.7 and summary["quiet"] is False, summary
    assert alone.other_cores() < busy.other_cores()
    assert set(summary) == {"other_cores", "load_avg_before", "load_avg_after", "quiet"}
    assert BUSY_CORES == 0.5
