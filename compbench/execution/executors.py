"""Executors: where a run's jobs are done.

- ``local`` with ``isolation: subprocess`` (the default): each job in a fresh process (forked
  from a preloaded fork server, see ``isolation.py`` and ``worker.py``), one at a time, so
  measurements never share threads or allocator state with training or with each other, with a
  timeout; a crash, an out-of-memory kill or a timeout becomes the job's failure, not the run's.
- ``local`` with ``isolation: inline``: in the runner's process, one after another (fast; a crash
  takes the run down).
- ``ray`` (``ray_executor.py``): jobs as Ray tasks, each still isolated the same way.

Executors register like compressors: built-ins by ``"module:Class"`` (Ray is imported only when
asked for), plugins through the entry-point group ``compbench.executors``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator

from compbench.common.progress import Reporter
from compbench.common.registry import Registry
from compbench.config.settings import RunSettings
from compbench.execution.isolation import EventForwarder, log_file, run_isolated
from compbench.execution.jobs import Job, JobResult, RunContext, run_job


class Executor(ABC):
    name: str

    def __init__(self, settings: RunSettings, reporter: Reporter) -> None:
        self.settings, self.reporter = settings, reporter

    @abstractmethod
    def run(self, jobs: list[Job], started: Callable[[Job], None]) -> Iterator[JobResult]:
        """Each job's result as it finishes (``started`` is called as a job begins). Closing the
        iterator early (Ctrl-C, --fail-fast) stops the jobs still running."""

    def close(self) -> None:
        """Release what the executor holds."""


EXECUTORS: Registry = Registry("executor", "compbench.executors", base=Executor, builtins={
    "local": "compbench.execution.executors:LocalExecutor",
    "ray": "compbench.execution.ray_executor:RayExecutor",
})


class LocalExecutor(Executor):
    """One job at a time on this machine, isolated in a subprocess or inline."""

    name = "local"

    def __init__(self, settings: RunSettings, reporter: Reporter) -> None:
        super().__init__(settings, reporter)
        self._context: RunContext | None = None

    def run(self, jobs: list[Job], started: Callable[[Job], None]) -> Iterator[JobResult]:
        for job in jobs:
            started(job)
            if self.settings.isolation == "inline":
                if self._context is None:
                    self._context = RunContext(self.settings, self.reporter)
                yield run_job(self._context, job)
            else:
                yield run_isolated(self.settings, job, log_file(self.settings, job), EventForwarder(self.reporter))
