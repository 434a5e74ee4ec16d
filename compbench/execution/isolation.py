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
    process = context.Process(
        target=serve,
        args=({"settings": asdict(settings), "job": asdict(job)}, send, str(log_path)),
        name=f"compbench {job.label}",
    )
    result: dict = {}

    def read_events() -> None:
        while True:
            try:
                event = receive.recv()
            except (EOFError, OSError):
                return
            if event.get("event") == "result":
                result.update(event["result"])
                continue
            try:
                on_event(event)
            except Exception:    # a display problem must not lose the job's result
                pass

    timeout = job.timeout(settings)
    start = time.perf_counter()
    process.start()
    send.close()                  # the child holds the only writing end: EOF when it exits
    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    try:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            reader.join(timeout=5)
            return JobResult(
                job,
                "failed",
                f"timed out after {timeout:g} s (the {job.kind} timeout); its process was killed",
                seconds=time.perf_counter() - start,
            )
    except BaseException:         # Ctrl-C, or the run stopping early: the job goes with it
        process.kill()
        process.join()
        raise
    finally:
        if close := getattr(on_event, "close_all", None):
            close()
    reader.join(timeout=30)
    receive.close()
    if result:
        return JobResult.from_json(result)
    return JobResult(job, "failed", _exit_reason(process.exitcode, log_path), seconds=time.perf_counter() - start)


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
