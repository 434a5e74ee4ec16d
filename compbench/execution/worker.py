"""Doing one job in a fresh process, forked from a server that has compbench imported.

``isolation.run_isolated`` starts ``serve`` through multiprocessing's *forkserver*: the
server imports compbench, torch, transformers and onnxruntime once (and has done no work, so
it holds no thread pools or allocations), and each job is a fork of it: a fresh process that
starts in well under a second instead of re-importing for several. Progress and the result
go back over a pipe; what the job's process prints goes to its log file in the run's ``logs/``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

from compbench.common.progress import Bar, Reporter
from compbench.config.settings import RunSettings
from compbench.execution.jobs import Job, JobResult, RunContext, run_job


class EventReporter(Reporter):
    """A reporter that sends what it is told to the parent process as JSON lines."""

    def __init__(self, send: Callable[[dict], None]) -> None:
        super().__init__(enabled=True)
        self.emit = send
        self._next_bar = 0

    def log(self, message: str) -> None:
        self.emit({"event": "log", "message": message})

    def waiting(self, why: str | None) -> None:
        self.emit({"event": "waiting", "message": why})

    def open_bar(self, description: str, total: int) -> Bar:
        self._next_bar += 1
        self.emit({"event": "bar", "id": self._next_bar, "description": description, "total": total})
        return _EventBar(self, self._next_bar)


class _EventBar(Bar):
    """Sends advances at most every 0.2 s (summed), so a fast loop does not flood the pipe."""

    def __init__(self, reporter: EventReporter, bar_id: int) -> None:
        self.reporter, self.bar_id = reporter, bar_id
        self.pending, self.postfix, self.last = 0, "", 0.0

    def advance(self, n: int = 1, postfix: str = "") -> None:
        self.pending, self.postfix = self.pending + n, postfix
        if time.monotonic() - self.last >= 0.2:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.reporter.emit({"event": "advance", "id": self.bar_id, "n": self.pending, "postfix": self.postfix})
        self.pending, self.last = 0, time.monotonic()

    def close(self) -> None:
        self._flush()
        self.reporter.emit({"event": "close", "id": self.bar_id})


def die_with_parent() -> None:
    """Be killed when the parent process dies (Linux), so no job outlives its run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def die_with_runner(lifeline) -> None:
    """End this process the moment the runner that started it dies: its end of ``lifeline`` (a pipe nobody
    writes to) then reads EOF. Runs in a daemon thread; a job that ends normally never hears from it."""
    def watch() -> None:
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="compbench lifeline", daemon=True).start()


def serve(request: dict, connection, log_path: str, lifeline=None) -> None:
    """The job process: stdout and stderr into ``log_path``, events and the result to ``connection``; it dies
    with the runner (``lifeline``)."""
    die_with_parent()
    if lifeline is not None:
        die_with_runner(lifeline)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the runner's to handle: it stops this job
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    reporter = EventReporter(connection.send)
    job = Job(**request["job"])
    try:
        context = RunContext(RunSettings(**request["settings"]), reporter)
        result = run_job(context, job)
    except Exception as exc:   # the context itself could not be rebuilt (a suite or plugin that broke meanwhile)
        result = JobResult(job, "failed", f"{type(exc).__name__}: {exc}")
    connection.send({"event": "result", "result": result.to_json()})
    connection.close()
    sys.stdout.flush()
    sys.stderr.flush()
