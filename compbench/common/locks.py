"""Advisory file locks (``flock``): one process at a time in a run folder, and one timing at a time on a machine.

A lock is held by an open file, so the kernel releases it when its process dies, kill -9 included:
a lock is never left behind by a crashed run.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from compbench.common.errors import UsageError

RUN_LOCK = ".lock"     # in a run folder: held by the process working in it


class FolderBusy(UsageError):
    """Another process holds the lock."""


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)    # the machine's timing lock is shared by every user's runs
    except OSError:
        pass
    return fd


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _claim(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; a second process gets a :class:`FolderBusy` naming the folder."""
    fd = _open_lock(Path(run_dir) / RUN_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{run_dir} is in use by another compbench process (pid {_holder(fd)}); "
                             "wait for it to finish, or stop it, then resume") from None
        _claim(fd)
        yield
    finally:
        os.close(fd)


def timing_lock_path() -> Path:
    """The machine's timing lock: in the local temporary folder (never in a cache a cluster may share)."""
    return Path(tempfile.gettempdir()) / "compbench-timing.lock"


@contextmanager
def machine_timing_lock(waiting: Callable[[str | None], None] | None = None,
                        path: Path | None = None) -> Iterator[None]:
    """Hold this machine's timing lock for the block, waiting for another process's timing to end first
    (``waiting`` is told why as the wait begins, with the holder's pid, and None as it ends)."""
    fd = _open_lock(path or timing_lock_path())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(f"waiting for another compbench process (pid {_holder(fd)}) to finish timing on this machine")
            fcntl.flock(fd, fcntl.LOCK_EX)
            if waiting is not None:
                waiting(None)
        _claim(fd)
        yield
    finally:
        os.close(fd)
