"""Progress reporting: a live view on a terminal, plain log lines elsewhere (CI).

A ``Reporter`` is where the runner, the training loop and the workers say what they are
doing. On a terminal, a run shows one live view: the plan (cells done, running, failed,
skipped, with elapsed and estimated time) and below it the bar of the step now running.
Off a terminal every bar becomes a log line at each tenth, and the plan a line per job.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _columns():
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[postfix]}"), TimeElapsedColumn(), TimeRemainingColumn())


class Reporter:
    """``enabled=False`` silences bars (tests); status lines still go to stderr."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._live: Progress | None = None     # the plan's live view, while one is showing

    @property
    def interactive(self) -> bool:
        return self.enabled and self.console.is_terminal

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def waiting(self, why: str | None) -> None:
        """A wait for the machine begins (``why``) or ends (None): not the job's own time (its timeout pauses)."""
        if why:
            self.log(why)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator["Bar"]:
        handle = self.open_bar(description, total)
        try:
            yield handle
        finally:
            handle.close()

    def open_bar(self, description: str, total: int) -> "Bar":
        """A bar to ``advance`` and ``close`` (for callers that cannot use the context manager)."""
        if not self.interactive:
            return LineBar(self if self.enabled else None, description, total)
        if self._live is not None:       # inside the plan view: one more line of the same display
            return _RichBar(self._live, self._live.add_task(description, total=total, postfix=""), owned=False)
        progress = Progress(*_columns(), console=self.console, transient=False)
        progress.start()
        return _RichBar(progress, progress.add_task(description, total=total, postfix=""), owned=True)

    @contextmanager
    def plan(self, total_cells: int) -> Iterator["PlanView"]:
        """The run's overall view; bars opened meanwhile show beneath it."""
        if not self.interactive:
            yield PlanView(self, total_cells, None, None)
            return
        progress = Progress(*_columns(), console=self.console, transient=False)
        self._live = progress
        progress.start()
        try:
            yield PlanView(self, total_cells, progress, progress.add_task("cells", total=total_cells, postfix=""))
        finally:
            self._live = None
            progress.stop()


class Bar(ABC):
    """A handle on one progress bar: ``advance(n, postfix='loss 0.31')``, then ``close()``."""

    @abstractmethod
    def advance(self, n: int = 1, postfix: str = "") -> None:
        """Count ``n`` more steps done."""

    def close(self) -> None:
        pass


class _RichBar(Bar):
    def __init__(self, progress: Progress, task_id: TaskID, owned: bool) -> None:
        self.progress, self.task_id, self.owned = progress, task_id, owned

    def advance(self, n: int = 1, postfix: str = "") -> None:
        self.progress.update(self.task_id, advance=n, postfix=postfix)

    def close(self) -> None:
        if self.owned:
            self.progress.stop()
        else:
            self.progress.remove_task(self.task_id)


class LineBar(Bar):
    """Log a line at every 10% (and at the end) instead of redrawing a bar."""

    def __init__(self, reporter: Reporter | None, description: str, total: int) -> None:
        self.reporter, self.description, self.total = reporter, description, max(total, 1)
        self.done, self.next_mark, self.start = 0, 0.1, time.perf_counter()

    def advance(self, n: int = 1, postfix: str = "") -> None:
        self.done += n
        fraction = self.done / self.total
        if self.reporter is None or (fraction < self.next_mark and self.done < self.total):
            return
        while self.next_mark <= fraction:
            self.next_mark += 0.1
        elapsed = time.perf_counter() - self.start
        self.reporter.log(f"  {self.description}: {self.done}/{self.total} {postfix} [{elapsed:.0f}s]".rstrip())


class PlanView:
    """Counts of the plan's cells as the run goes, with elapsed time and an estimate of what is left.

    The estimate is the mean time of the finished jobs of each kind (model builds, cell
    measurements) times the number of that kind still to run.
    """

    def __init__(self, reporter: Reporter, total_cells: int, progress: Progress | None, task_id: TaskID | None) -> None:
        self.reporter, self.total, self.progress, self.task_id = reporter, total_cells, progress, task_id
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.running = ""
        self.start = time.perf_counter()
        self.job_seconds: dict[str, list[float]] = {}
        self.jobs_left: dict[str, int] = {}

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def expect(self, kind: str, n: int) -> None:
        """``n`` more jobs of ``kind`` are planned."""
        self.jobs_left[kind] = self.jobs_left.get(kind, 0) + n

    def started(self, label: str) -> None:
        self.running = label
        self._show(log=False)

    def job_done(self, kind: str, seconds: float) -> None:
        self.job_seconds.setdefault(kind, []).append(seconds)
        self.jobs_left[kind] = max(0, self.jobs_left.get(kind, 0) - 1)

    def cell_done(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n
        self._show(log=False)

    def checkpoint(self) -> None:
        """After a job: one log line off a terminal, a refresh on one."""
        self.running = ""
        self._show(log=True)

    def estimate_seconds(self) -> float | None:
        left = 0.0
        for kind, n in self.jobs_left.items():
            if n and not self.job_seconds.get(kind):
                return None
            if n:
                left += n * sum(self.job_seconds[kind]) / len(self.job_seconds[kind])
        return left

    def summary(self) -> str:
        parts = [f"{self.done}/{self.total} cells", *(f"{n} {status}" for status, n in self.counts.items() if n)]
        eta = self.estimate_seconds()
        return (
            ", ".join(parts)
            + f"; {_clock(time.perf_counter() - self.start)} elapsed"
            + (f", about {_clock(eta)} left" if eta else "")
        )

    def _show(self, log: bool) -> None:
        if self.progress is not None:
            eta = self.estimate_seconds()
            postfix = ", ".join([*(f"{n} {status}" for status, n in self.counts.items() if n and status != "ok"),
                                 *([f"about {_clock(eta)} left"] if eta else [])])
            running = f" · {self.running}" if self.running else ""
            self.progress.update(self.task_id, completed=self.done, postfix=postfix, description=f"cells{running}")
        elif log:
            self.reporter.log(f"[{self.summary()}]")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )
