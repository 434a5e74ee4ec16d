"""Executors: where a run's jobs are done.

- ``inline``: in the runner's process, one after another (fast; a crash takes the run down).
- ``subprocess`` (the default): each job in a fresh process (forked from a preloaded fork
  server, see ``worker.py``), one at a time, so measurements
  never share threads or allocator state with training or with each other, with a timeout;
  a crash, an out-of-memory kill or a timeout becomes the job's failure, not the run's.
- ``ray`` (``compbench.ray_executor``): jobs as Ray tasks, each still isolated the same way.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from compbench.jobs import BUILD, Job, JobResult, RunContext, RunSettings, run_job
from compbench.progress import Bar, Reporter
from compbench.registry import Registry

Isolation = Literal["subprocess", "inline"]


@dataclass(frozen=True)
class ExecutorOptions:
    isolation: Isolation = "subprocess"
    cell_timeout: float | None = None      # seconds for one cell's measurement
    build_timeout: float | None = None     # seconds for one pipeline's build (training included)
    address: str | None = None             # Ray: a cluster address; None starts Ray on this machine

    def timeout(self, job: Job) -> float | None:
        return self.build_timeout if job.kind == BUILD else self.cell_timeout


class Executor(ABC):
    name: str

    def __init__(self, settings: RunSettings, options: ExecutorOptions, reporter: Reporter) -> None:
        self.settings, self.options, self.reporter = settings, options, reporter

    @abstractmethod
    def run(self, jobs: list[Job], started: Callable[[Job], None]) -> Iterator[JobResult]:
        """Each job's result as it finishes (``started`` is called as a job begins). Closing the
        iterator early (Ctrl-C, --fail-fast) stops the jobs still running."""

    def close(self) -> None:
        """Release what the executor holds."""


EXECUTORS: Registry[Executor] = Registry("executor", "compbench.executors", base=Executor)


@EXECUTORS.register
class LocalExecutor(Executor):
    """One job at a time on this machine, isolated in a subprocess or inline."""

    name = "local"

    def __init__(self, settings: RunSettings, options: ExecutorOptions, reporter: Reporter) -> None:
        super().__init__(settings, options, reporter)
        self._context: RunContext | None = None

    def run(self, jobs: list[Job], started: Callable[[Job], None]) -> Iterator[JobResult]:
        for job in jobs:
            started(job)
            if self.options.isolation == "inline":
                if self._context is None:
                    self._context = RunContext(self.settings, self.reporter)
                yield run_job(self._context, job)
            else:
                yield run_isolated(self.settings, job, self.options.timeout(job), log_file(self.settings, job),
                                   EventForwarder(self.reporter))


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
    context.set_forkserver_preload(["compbench.worker_preload"])
    return context


def run_isolated(settings: RunSettings, job: Job, timeout: float | None, log_path: Path,
                 on_event: Callable[[dict], None]) -> JobResult:
    """Do ``job`` in a fresh process and return its result; a timeout, a signal or an exit
    without a result becomes a failed result saying which."""
    from compbench.worker import serve

    log_path.parent.mkdir(parents=True, exist_ok=True)
    context = _fork_context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=serve, args=({"settings": asdict(settings), "job": asdict(job)}, send, str(log_path)),
                              name=f"compbench {job.label}")
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
            return JobResult(job, "failed", f"timed out after {timeout:g} s (the {job.kind} timeout); its process was killed",
                             seconds=time.perf_counter() - start)
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


def make_executor(name: str, settings: RunSettings, options: ExecutorOptions, reporter: Reporter) -> Executor:
    if name == "ray":
        import compbench.ray_executor  # noqa: F401  (registers itself; imports ray only when asked for)
    return EXECUTORS.get(name)(settings, options, reporter)
