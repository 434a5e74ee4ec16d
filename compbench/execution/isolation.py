"""Doing one job in a fresh process with a timeout: a crash, a kill or a timeout becomes a failed result.

Job processes are forked from multiprocessing's *forkserver*, preloaded with what every job
imports (``worker_preload.py``), so each starts in well under a second; ``worker.serve`` runs
the job and sends its progress events and result back over a pipe.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from compbench.common.progress import Bar, Reporter
from compbench.config.settings import RunSettings
from compbench.execution.jobs import Job, JobResult


def log_file(settings: RunSettings, job: Job) -> Path:
    """``logs/<job>.log`` in the run folder: what the job's process wrote to stderr."""
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", job.label.replace("/", "__"))
    return Path(settings.run_dir) / "logs" / f"{job.kind}-{slug}.log"


class EventForwarder:
    """Replays a worker's JSON-line events on a reporter: its log lines and its progress bars."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.bars: dict[int, Bar] = {}

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "log":
            self.reporter.log(event["message"])
        elif kind == "waiting" and event.get("message"):
            self.reporter.log(event["message"])
        elif kind == "bar":
            self.bars[event["id"]] = self.reporter.open_bar(event["description"], event["total"])
        elif kind == "advance" and event["id"] in self.bars:
            self.bars[event["id"]].advance(event["n"], event.get("postfix", ""))
        elif kind == "close" and event["id"] in self.bars:
            self.bars.pop(event["id"]).close()

    def close_all(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _fork_context():
    """multiprocessing's fork server, preloaded with what every job imports (started on first use)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["compbench.execution.worker_preload"])
    return context


def run_isolated(settings: RunSettings, job: Job, log_path: Path, on_event: Callable[[dict], None]) -> JobResult:
    """Do ``job`` in a fresh process and return its result; a timeout, a signal or an exit
    without a result becomes a failed result saying which."""
    from compbench.execution.worker import serve

    log_path.parent.mkdir(parents=True, exist_ok=True)
    context = _fork_context()
    receive, send = context.Pipe(duplex=False)
    # the lifeline: this process holds its only writing end and never writes; when this process dies (kill -9
    # too) the job reads EOF and ends itself at once. (Its parent is the fork server, which outlives us for
    # seconds: a parent-death signal alone left jobs running against a resumed run's timings.)
    lifeline, lifeline_end = context.Pipe(duplex=False)
    request = {"settings": asdict(settings), "job": asdict(job)}
    process = context.Process(target=serve, args=(request, send, str(log_path), lifeline),
                              name=f"compbench {job.label}")
    reader = _EventReader(receive, on_event)
    timeout = job.timeout(settings)
    start = time.perf_counter()
    try:
        process.start()
    except BaseException:         # interrupted while starting: no job left behind
        if process.pid is not None:
            process.kill()
            process.join()
        raise
    send.close()                  # the child holds the only writing end: EOF when it exits
    lifeline.close()
    reader.start()
    try:
        finished = _wait(process, timeout, reader)
    finally:
        lifeline_end.close()
        if close := getattr(on_event, "close_all", None):
            close()
    reader.join(timeout=30 if finished else 5)
    receive.close()
    seconds = time.perf_counter() - start
    if not finished:
        reason = f"timed out after {timeout:g} s (the {job.kind} timeout); its process was killed"
        return JobResult(job, "failed", reason, seconds=seconds)
    if reader.result:
        return JobResult.from_json(reader.result)
    return JobResult(job, "failed", _exit_reason(process.exitcode, log_path), seconds=seconds)


class _EventReader(threading.Thread):
    """Reads a job's events from its pipe until the job's end closes it: the result is kept, every
    other event (log lines, progress) goes to ``on_event``."""

    def __init__(self, receive, on_event: Callable[[dict], None]) -> None:
        super().__init__(daemon=True)
        self.receive, self.on_event = receive, on_event
        self.result: dict = {}
        self._waited = 0.0                       # seconds the job spent waiting for the machine, so far
        self._waiting_since: float | None = None

    def waited(self) -> float:
        """Seconds the job has waited for the machine (another process's timing): not counted in its timeout."""
        ongoing = time.perf_counter() - self._waiting_since if self._waiting_since is not None else 0.0
        return self._waited + ongoing

    def run(self) -> None:
        while True:
            try:
                event = self.receive.recv()
            except (EOFError, OSError):
                return
            if event.get("event") == "result":
                self.result.update(event["result"])
                continue
            if event.get("event") == "waiting":
                if event.get("message"):
                    self._waiting_since = time.perf_counter()
                elif self._waiting_since is not None:
                    self._waited += time.perf_counter() - self._waiting_since
                    self._waiting_since = None
            try:
                self.on_event(event)
            except Exception:    # a display problem must not lose the job's result
                pass


def _wait(process, timeout: float | None, reader: _EventReader) -> bool:
    """Whether ``process`` ended within ``timeout`` seconds of its own work (time spent waiting for the
    machine not counted); it is killed when not, and when the wait itself is interrupted (Ctrl-C, or the run
    stopping early), which is raised on."""
    start = time.perf_counter()
    try:
        while process.is_alive():
            left = None if timeout is None else timeout + reader.waited() - (time.perf_counter() - start)
            if left is not None and left <= 0:
                break
            process.join(1.0 if left is None else min(left, 1.0))
    except BaseException:
        process.kill()
        process.join()
        raise
    if process.is_alive():
        process.kill()
        process.join()
        return False
    return True


def _exit_reason(exitcode: int | None, log_path: Path) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        cause = " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
        reason = f"its process was killed by {name}{cause}"
    else:
        reason = f"its process exited with code {exitcode} without a result"
    last = _last_line(log_path)
    return reason + (f"; last output: {last}" if last else "") + f"; see {log_path}"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
