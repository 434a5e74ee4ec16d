"""The run folder's lock and the machine's timing lock: held by an open file, so a killed holder leaves none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from compbench.common.locks import FolderBusy, machine_timing_lock, run_folder_lock

HOLD = """
import sys, time
from pathlib import Path
from compbench.common.locks import machine_timing_lock, run_folder_lock
kind, path = sys.argv[1], Path(sys.argv[2])
lock = run_folder_lock(path) if kind == "run" else machine_timing_lock(path=path)
with lock:
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(kind: str, path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, kind, str(path), str(seconds)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_in_a_run_folder_is_refused_until_the_first_is_killed(tmp_path):
    holder = hold("run", tmp_path, 60)
    with pytest.raises(FolderBusy, match=f"{tmp_path} is in use by another compbench process \\(pid {holder.pid}\\)"):
        with run_folder_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_folder_lock(tmp_path):          # the kernel released it with the process
        pass


def test_timing_waits_for_another_process_and_says_so(tmp_path):
    path = tmp_path / "timing.lock"
    holder = hold("timing", path, 1.5)
    said: list = []
    start = time.perf_counter()
    with machine_timing_lock(said.append, path=path):
        waited = time.perf_counter() - start
    holder.wait()
    assert waited > 0.8, waited
    assert said[0] == f"waiting for another compbench process (pid {holder.pid}) to finish timing on this machine"
    assert said[1:] == [None]
    said.clear()
    with machine_timing_lock(said.append, path=path):     # free: no wait, nothing said
        pass
    assert said == []


def test_the_timing_lock_is_machine_local_not_in_a_cache(monkeypatch, tmp_path):
    from compbench.common.locks import timing_lock_path

    monkeypatch.setenv("COMPBENCH_CACHE_DIR", str(tmp_path))
    assert not str(timing_lock_path()).startswith(str(tmp_path))
    assert os.path.dirname(timing_lock_path()) == __import__("tempfile").gettempdir()
