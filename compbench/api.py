"""compbench from Python: run a suite (a file or a ``Suite``) and read its rows as a pandas frame.

    from compbench import api

    result = api.run("suites/quick.yaml", limit_eval=200)      # any `compbench run` setting by name
    result.run_dir                                             # results/quick-20261129-120000
    result.rows                                                # one row per measurement (results.csv's columns)

    suite = api.load_suite("suites/quick.yaml")
    suite.pipelines = suite.pipelines[:2]                      # a Suite object runs the same way
    api.run(suite, run_id="two-pipelines")

``api.read_rows(RUN_DIR)`` reads any run folder's rows (no torch needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compbench.common.progress import Reporter
from compbench.config.loading import load_suite
from compbench.config.schema import Suite

__all__ = ["RunResult", "Suite", "load_suite", "read_rows", "resume", "run"]


@dataclass(frozen=True)
class RunResult:
    """A finished (or stopped) run: its folder, row counts by status, wall time."""

    run_dir: Path
    counts: dict[str, int]
    seconds: float
    stopped_early: bool

    @property
    def rows(self) -> pd.DataFrame:
        return read_rows(self.run_dir)


def run(suite: str | Path | Suite, *, results_dir: str | Path = "results", run_id: str | None = None,
        progress: bool = False, **settings: Any) -> RunResult:
    """Run ``suite`` into a new folder under ``results_dir``; ``settings`` are ``compbench run``'s options by
    name (``data_dir``, ``limit_train``, ``limit_eval``, ``cache_dir``, ``executor``, ``isolation``, ``cell_timeout``,
    ``fail_fast``, ``remeasure``, ...). A mistake raises ``compbench.common.errors.UsageError``."""
    from compbench.execution.runner import start_run

    suite_run = start_run(suite, Reporter(enabled=progress), results_dir=Path(results_dir), run_id=run_id, **settings)
    return _result(suite_run.execute())


def resume(run_dir: str | Path, *, progress: bool = False, **settings: Any) -> RunResult:
    """Finish the run in ``run_dir`` (only its missing and failed cells run)."""
    from compbench.execution.runner import resume_run

    return _result(resume_run(Path(run_dir), Reporter(enabled=progress), **settings).execute())


def read_rows(run_dir: str | Path, reference: str | None = None) -> pd.DataFrame:
    """One row per measurement of a run folder, with every relative and roofline column (as ``results.csv``);
    with ``reference``, also each row's paired metric delta against that pipeline."""
    from compbench.results.report import RunReport

    return RunReport.from_run_dir(Path(run_dir), reference).frame()


def _result(summary) -> RunResult:
    return RunResult(summary.run_dir, summary.counts, summary.seconds, summary.stopped_early)
