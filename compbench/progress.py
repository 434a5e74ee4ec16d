"""Progress reporting: a rich progress bar on a terminal, plain log lines elsewhere (CI)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Where the runner and the training loop say what they are doing.

    ``enabled=False`` silences bars (tests); status lines still go to stderr.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled

    @property
    def interactive(self) -> bool:
        return self.enabled and self.console.is_terminal

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator["Bar"]:
        if self.interactive:
            columns = (
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[postfix]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            )
            with Progress(*columns, console=self.console, transient=False) as progress:
                task_id = progress.add_task(description, total=total, postfix="")
                yield Bar(lambda n, postfix: progress.update(task_id, advance=n, postfix=postfix))
        else:
            yield _LineBar(self if self.enabled else None, description, total)


class Bar:
    """A handle on one progress bar: ``advance(n, postfix='loss 0.31')``."""

    def __init__(self, update) -> None:
        self._update = update

    def advance(self, n: int = 1, postfix: str = "") -> None:
        self._update(n, postfix)


class _LineBar(Bar):
    """Log a line at every 10% (and at the end) instead of redrawing a bar."""

    def __init__(self, reporter: Reporter | None, description: str, total: int) -> None:
        self.reporter, self.description, self.total = reporter, description, max(total, 1)
        self.done, self.next_mark, self.start = 0, 0.1, time.perf_counter()
        super().__init__(self._line)

    def _line(self, n: int, postfix: str) -> None:
        self.done += n
        fraction = self.done / self.total
        if self.reporter is None or (fraction < self.next_mark and self.done < self.total):
            return
        while self.next_mark <= fraction:
            self.next_mark += 0.1
        elapsed = time.perf_counter() - self.start
        self.reporter.log(f"  {self.description}: {self.done}/{self.total} {postfix} [{elapsed:.0f}s]".rstrip())


