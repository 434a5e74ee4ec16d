"""Executing a suite: plan of cells -> builds -> measurements -> rows, durable and resumable.

The runner plans in its own process and hands the work to an executor as jobs (see
``jobs.py``): first the pipeline builds that the artifact store does not hold yet (the
teacher first, a pipeline after any pipeline its steps extend; ``plan.py``), then one
measurement job per cell that the result cache cannot serve. Each finished cell's rows are
appended to ``results.jsonl`` at once, so a killed run keeps them, and ``--resume`` runs only
the rest.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from compbench.cache.result_cache import ResultCache
from compbench.common import envinfo
from compbench.common.envinfo import usable_cores
from compbench.common.errors import CompbenchError, DataNotFoundError, UsageError
from compbench.common.files import write_atomically
from compbench.common.locks import run_folder_lock
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.chain import StepInputs, planned_hash
from compbench.config.backends import PROFILES
from compbench.config.cells import Cell, expand, shapes
from compbench.config.loading import load_suite, suite_yaml
from compbench.config.schema import Suite, run_name_problem
from compbench.config.settings import RUN_FILE, RunSettings, read_run_record, resolve_settings, resume_settings
from compbench.execution.executors import EXECUTORS, Executor
from compbench.execution.jobs import BUILD, MEASURE, PEAK, Job, JobResult, RunContext, check_tasks, peak_job
from compbench.execution.plan import (
    Build,
    blocked_by,
    build_waves,
    cell_status,
    complete_cells,
    pipelines_to_measure,
    with_teacher_first,
)
from compbench.measurement.cell import cell_key, measured_identity, served_rows_problem
from compbench.measurement.peak import peak_key
from compbench.models.artifact import ModelArtifact
from compbench.results.report import write_reports
from compbench.results.rows import ResultsFile, as_rows_of, closed_rows, read_rows, write_labels
from compbench.training.finetune import teacher_key

ArtifactHashes = dict[tuple[str, str], str]     # (task, pipeline) -> the artifact its cells measure


@dataclass
class RunSummary:
    run_dir: Path
    counts: dict[str, int]
    seconds: float
    stopped_early: bool = False

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


class StopRun(Exception):
    """--fail-fast: a cell failed."""


def new_run_dir(results_dir: Path, suite: Suite, run_id: str | None) -> Path:
    """A new folder under ``results_dir``, made atomically: two runs started at once never share one."""
    name = run_id if run_id is not None else suite.name
    problem = run_name_problem(name)
    if problem:     # a suite name is checked when the suite is read; a Suite object built in code may skip that
        raise UsageError(f"{'--run-id' if run_id is not None else 'the suite name'} {problem}")
    base = run_id or f"{suite.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            run_dir = results_dir / (base if n == 1 else f"{base}-{n}")
            try:
                run_dir.mkdir()
                return run_dir.resolve()
            except FileExistsError:
                continue
    except OSError as exc:
        raise UsageError(f"cannot make a run folder in {results_dir}: {exc.strerror or exc}; "
                         "pass --results-dir a folder you can write to") from None
    raise UsageError(f"{results_dir}: 9999 run folders named {base}-*; pass another --run-id")


def start_run(suite: Path | str | Suite, reporter: Reporter | None = None, *, results_dir: Path = Path("results"),
              run_id: str | None = None, **overrides: Any) -> "SuiteRun":
    """A new run folder for ``suite`` (a suite file, or a ``Suite`` whose relative paths resolve against its
    ``_base_dir``) with the suite's copy, ``run.json`` and ``env.json``; ``overrides`` are the command
    line's settings (``config.settings.OVERRIDES``; None = not given)."""
    if isinstance(suite, Suite):
        source, base_dir, text = "(a Suite object)", suite._base_dir.resolve(), suite_yaml(suite)
    else:
        path = Path(suite)
        suite = load_suite(path)
        source, base_dir, text = str(path.resolve()), path.resolve().parent, path.read_text(encoding="utf-8")
    # missing data, or a given teacher that does not fit: before any folder is made
    check_tasks(suite, overrides.get("data_dir"), overrides.get("cache_dir"))
    # settings checked before a folder is made, then placed in it
    settings = resolve_settings(suite, overrides, suite_file=Path(), base_dir=base_dir, run_dir=Path())
    run_dir = new_run_dir(Path(results_dir), suite, run_id)
    settings = settings.placed_in(run_dir)
    write_atomically(run_dir / "suite.yaml", text)
    record = {"suite": source, "settings": asdict(settings), "started": datetime.now().isoformat(timespec="seconds")}
    write_atomically(run_dir / RUN_FILE, json.dumps(record, indent=2))
    write_atomically(run_dir / "env.json", json.dumps(envinfo.collect(), indent=2))
    return SuiteRun(suite, settings, reporter or Reporter())


def resume_run(run_dir: Path, reporter: Reporter | None = None, **overrides: Any) -> "SuiteRun":
    """The run in ``run_dir`` again, where it is now (a moved or copied folder too), from its own copy of the
    suite and its recorded settings (``overrides`` may change how it is executed): only cells without a
    complete ``ok``/``skipped`` set of rows run (failed cells are tried again)."""
    run_dir = Path(run_dir).resolve()
    record = read_run_record(run_dir)
    suite_file = run_dir / "suite.yaml"
    if not suite_file.is_file():
        raise UsageError(f"{run_dir} has no suite.yaml (the copy of the suite a run keeps); cannot resume it")
    suite = load_suite(suite_file)
    settings = resume_settings(record, overrides, suite, run_dir=run_dir)
    suite._base_dir = Path(settings.base_dir)
    return SuiteRun(suite, settings, reporter or Reporter(), resuming=True)


def reference_description(suite: Suite) -> str:
    """The suite's reference backend in words, for the run's log."""
    given = suite.reference_backend
    if given is None:
        return "none (reference_backend: null): models are timed against the teacher on their own backend only"
    device = given.device or "each cell's device"
    threads = given.threads or PROFILES.get(given.profile, {}).get("threads") or "each cell's"
    options = "".join(f", {key}={value}" for key, value in sorted(given.options.items()))
    return (f"{given.name} {given.precision} on {device} at {threads} threads{options}: every model, the teacher "
            "too, is also timed interleaved against the teacher there (speedup_vs_reference)")


class SuiteRun:
    """One execution (or resumption) of a suite into one results folder."""

    def __init__(self, suite: Suite, settings: RunSettings, reporter: Reporter, resuming: bool = False) -> None:
        self.suite, self.settings, self.reporter = suite, settings, reporter
        self.run_dir, self.run_id = Path(settings.run_dir), settings.run_id
        self.resuming = resuming
        self.results = ResultsFile(self.run_dir / "results.jsonl")
        self.result_cache = ResultCache(Path(settings.cache_dir), warn=lambda message: reporter.log(
            f"compbench: warning: {message}"))
        self.counts: dict[str, int] = {}
        self.peaks: dict[tuple[str, int, str], dict] = {}    # (device, threads, dtype) -> this run's matmul peak
        self.peak_keys: dict[str, tuple[str, int, str]] = {}   # cell id -> the peak its rows are read against
        self.teachers: dict[str, str] = {}                      # task -> the teacher's artifact hash

    # ------------------------------------------------------------------ the run

    def execute(self) -> RunSummary:
        """Run (or finish) the suite, holding the run folder's lock: a second process in it is refused."""
        with run_folder_lock(self.run_dir):
            return self._execute()

    def _execute(self) -> RunSummary:
        start = time.perf_counter()
        cells = expand(self.suite)
        done = self._keep_finished_rows() if self.resuming else {}
        todo = [cell for cell in cells if cell.cell_id not in done]
        context = RunContext(self.settings, self.reporter)
        self._log_start(cells, done, context)
        stopped = False
        executor = None
        try:
            with self.reporter.plan(len(cells)) as plan:
                self.plan = plan
                for rows in done.values():
                    plan.cell_done(cell_status(rows))
                executor = EXECUTORS.get(self.settings.executor)(self.settings, self.reporter)
                todo = self._runnable(todo)
                artifacts = self._builds(context, todo, executor)
                self._measurements(context, todo, artifacts, executor)
        except StopRun:
            stopped = True
            self.reporter.log("compbench: stopped at the first failed cell (--fail-fast); "
                              f"resume with: compbench run --resume {self.run_dir}")
        finally:   # on Ctrl-C too: the reports show every row finished so far
            if executor is not None:
                executor.close()
            warnings = self._write_reports()
        seconds = time.perf_counter() - start
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        for warning in warnings:       # what makes the numbers mean less: last, where they are read
            self.reporter.log(f"compbench: warning: {warning}")
        self.reporter.log(f"compbench: done in {seconds:.0f}s: {counts} rows; report: {self.run_dir / 'report.md'}")
        return RunSummary(self.run_dir, dict(self.counts), seconds, stopped)

    def _write_reports(self) -> list[str]:
        """report.md, results.csv and plots from the rows; a report that fails is said, never the run's end (the
        rows are in results.jsonl). The report's warnings."""
        try:
            return write_reports(self.run_dir).warnings
        except Exception as exc:
            with open(self.run_dir / "errors.log", "a", encoding="utf-8") as log:
                log.write(traceback.format_exc())
            self.reporter.log(f"compbench: the report could not be written ({type(exc).__name__}: {exc}; traceback "
                              f"in errors.log); every row is in results.jsonl: compbench report {self.run_dir}")
            return []

    def _log_start(self, cells: list[Cell], done: dict, context: RunContext) -> None:
        suite = self.suite
        verb = (f"resuming {self.run_dir}: {len(done)} of {len(cells)} cells already done" if self.resuming
                else f"{len(cells)} cells")
        self.reporter.log(f"compbench: {verb} ({len(suite.task_names)} tasks x {len(suite.pipelines)} pipelines x "
                          f"{len(suite.backends)} backends) -> {self.run_dir}")
        model = context.base_model
        self.reporter.log(f"data: {context.data_description()}; model: {model.reference} ({model.location}); "
                          f"cache: {self.settings.cache_dir}")
        self.reporter.log(f"reference backend: {reference_description(suite)}")

    def _keep_finished_rows(self) -> dict[str, list[dict]]:
        """Keep the rows of complete cells (atomically rewriting the file: a row cut off by a kill,
        or a cell with rows missing or failed, goes and runs again)."""
        rows = read_rows(self.results.path)
        done = complete_cells(rows, self.suite)
        kept = [row for row in rows if row["cell_id"] in done]
        self.results.rewrite(kept)
        return done

    def _runnable(self, cells: list[Cell]) -> list[Cell]:
        """Cells whose backend can run on this machine; the others become skipped rows with the
        reason before anything is built for them. On Ray the worker that gets a cell judges (it
        may have the GPU this machine lacks)."""
        if self.settings.executor != "local":
            return cells
        runnable = []
        for cell in cells:
            availability = BACKENDS.get(cell.backend.name)().availability(cell.backend)
            if availability.ok:
                runnable.append(cell)
            else:
                self._close([cell], "skipped", availability.reason)
        return runnable

    # ------------------------------------------------------------------ builds

    def _builds(self, context: RunContext, todo: list[Cell], executor: Executor) -> ArtifactHashes:
        """Artifact hash of every (task, pipeline) with cells to measure; cells whose data or
        build is missing are closed here."""
        artifacts: ArtifactHashes = {}
        needed: list[Build] = []
        for task in self.suite.task_names:
            task_cells = [c for c in todo if c.task == task]
            if task_cells:
                needed += self._task_builds(context, task, task_cells, artifacts)
        if needed:
            self.reporter.log(f"compbench: {len(needed)} builds to do, {len(artifacts)} artifacts from the cache")
            self._run_builds(needed, todo, executor, artifacts)
        return artifacts

    def _task_builds(
        self, context: RunContext, task: str, task_cells: list[Cell], artifacts: ArtifactHashes
    ) -> list[Build]:
        """The builds one task needs (its cached artifacts go into ``artifacts``); its cells are
        closed as skipped when its data is missing."""
        try:
            data = context.task_data(task)
        except DataNotFoundError as exc:
            self.reporter.log(f"{task}: skipped: {exc}")
            self._close(task_cells, "skipped", str(exc))
            return []
        write_labels(self.run_dir, task, {split: frame["label"].tolist() for split, frame in data.eval.items()
                                              if "label" in frame})   # a corpus's documents have none
        teacher_hash = self.teachers[task] = teacher_key(context.base_model, data, self.suite.teacher)
        teacher_cached = context.store.get(teacher_hash) is not None
        if teacher_cached:
            self.reporter.log(f"{task}: teacher from cache ({context.store.path_for(teacher_hash)})")
        needed = []
        inputs = StepInputs(data.fingerprint, self.suite.seed, self.suite.resolve_path("."))
        for pipeline in pipelines_to_measure(self.suite, task_cells):
            expected = planned_hash(teacher_hash, pipeline, inputs)
            if context.store.get(expected) is not None:
                artifacts[(task, pipeline.name)] = expected
            else:
                needed.append(Build(task, pipeline, expected))
        return with_teacher_first(task, needed, self.suite, teacher_hash, teacher_cached)

    def _run_builds(self, needed: list[Build], todo: list[Cell], executor: Executor, artifacts: ArtifactHashes) -> None:
        """Build in waves; a failed build closes its cells and those of every pipeline that extends it."""
        self.plan.expect(BUILD, len(needed))
        failed: dict[tuple[str, str], str] = {}
        cpus = self.settings.build_cpus or usable_cores()
        for wave in build_waves(needed):
            jobs = []
            for build in wave:
                blocker = blocked_by(build, failed, self.suite)
                if blocker:
                    failed[(build.task, build.pipeline.name)] = blocker
                    self._close(self._cells_of(todo, build.task, build.pipeline.name), "failed", blocker)
                else:
                    jobs.append(Job(BUILD, build.task, build.pipeline.name, cpus=cpus))
            for result in executor.run(jobs, self._started):
                self._note(result)
                key = (result.job.task, result.job.pipeline)
                if result.status == "ok":
                    artifacts[key] = result.artifact_hash
                else:
                    failed[key] = result.reason or result.status
                    self._close(self._cells_of(todo, *key), result.status, result.reason or "")
                self.plan.checkpoint()

    # ------------------------------------------------------------------ measurements

    def _measurements(
        self, context: RunContext, todo: list[Cell], artifacts: ArtifactHashes, executor: Executor
    ) -> None:
        """The cells whose artifact was built: served from the result cache, or measured as jobs."""
        planned = [(cell, artifacts[(cell.task, cell.pipeline.name)]) for cell in todo
                   if (cell.task, cell.pipeline.name) in artifacts]      # the others were closed by their build
        stored = self._stored(context, planned)
        planned = [(cell, artifact_hash) for cell, artifact_hash in planned
                   if artifact_hash in stored and self.teachers[cell.task] in stored]
        self.peak_keys = {
            cell.cell_id: peak_key(cell.backend, BACKENDS.get(cell.backend.name)().compute_precision(
                cell.backend, stored[artifact_hash].precision)) for cell, artifact_hash in planned
        }
        self._measure_peaks(set(self.peak_keys.values()), executor)
        jobs = self._serve_from_cache(context, planned, stored)
        self.plan.expect(MEASURE, len(jobs))
        for result in executor.run(list(jobs), self._started):
            self._note(result)
            cell, key = jobs[result.job]
            status = result.status if result.status != "ok" else "failed"
            rows = result.rows or closed_rows(self.run_id, cell, shapes(self.suite), status,
                                              result.reason or "the measurement gave no rows")
            for row in rows:
                row.setdefault("measured_in_run", self.run_id)
            cacheable = [dict(row) for row in rows]
            self._write_cell(cell, rows)        # the run first: a cache that cannot be written loses no row
            if all((row.get("machine_load") or {}).get("quiet") is not False for row in cacheable):
                self.result_cache.put(key, cacheable)
            self.plan.checkpoint()

    def _stored(self, context: RunContext, planned: list[tuple[Cell, str]]) -> dict[str, ModelArtifact]:
        """The artifacts the cells measure and the teachers they are timed against, each checked against its
        seal; the cells of one that is gone or damaged meanwhile are closed as failed with why."""
        stored: dict[str, ModelArtifact] = {}
        problems: dict[str, str] = {}
        for artifact_hash in {h for _, h in planned} | {self.teachers[cell.task] for cell, _ in planned}:
            try:
                stored[artifact_hash] = context.store.require(artifact_hash)
            except CompbenchError as exc:
                problems[artifact_hash] = str(exc)
        for cell, artifact_hash in planned:
            problem = problems.get(artifact_hash) or problems.get(self.teachers[cell.task])
            if problem:
                self._close([cell], "failed", problem)
        return {h: a for h, a in stored.items() if h not in problems}

    def _serve_from_cache(self, context: RunContext, planned: list[tuple[Cell, str]],
                          stored: dict[str, ModelArtifact]) -> dict[Job, tuple[Cell, str]]:
        """Write the cells the result cache holds; the measure jobs of the rest, with their cell and cache key."""
        jobs, served = {}, 0
        for cell, artifact_hash in planned:
            artifact = stored[artifact_hash]
            reference = None if cell.is_reference else stored[self.teachers[cell.task]]  # timed against the teacher
            key = cell_key(self.suite, cell, measured_identity(artifact), context.task_data(cell.task).fingerprint,
                           None if reference is None else measured_identity(reference))
            cached = None if self.settings.remeasure else self.result_cache.get(
                key, lambda rows: served_rows_problem(rows, cell, shapes(self.suite), artifact))
            if cached is not None:
                self._write_cell(cell, as_rows_of(cell, self.run_id, cached))
                served += 1
                continue
            job = Job(MEASURE, cell.task, cell.pipeline.name, cell.backend.label, artifact_hash,
                      None if reference is None else reference.hash,
                      cpus=cell.backend.resolved_threads(), gpus=1 if cell.backend.device == "cuda" else 0)
            jobs[job] = (cell, key)
        if served:
            self.reporter.log(f"compbench: {served} cells from the result cache (measured earlier on this machine; "
                              f"--remeasure times them again); {len(jobs)} to measure")
        return jobs

    def _measure_peaks(self, keys: set[tuple[str, int, str]], executor: Executor) -> None:
        """The dense matmul peak of each (device, threads, dtype) the cells run at, once per run."""
        jobs = [peak_job(*key) for key in sorted(keys)]
        self.plan.expect(PEAK, len(jobs))
        for result in executor.run(jobs, self._started):
            self._note(result)
            if result.status == "ok" and result.rows:
                peak = result.rows[0]
                self.peaks[(peak["device"], peak["threads"], peak["dtype"])] = peak
                spread = (f" (best of {len(peak['trials'])} trials, spread {100 * peak['spread']:.0f}%)"
                          if peak.get("trials") else "")
                self.reporter.log(f"compbench: {result.job.label}: {peak['gflops']:.1f} GFLOP/s{spread}")

    # ------------------------------------------------------------------ rows

    def _started(self, job: Job) -> None:
        self.plan.started(f"{job.kind} {job.label}")

    def _note(self, result: JobResult) -> None:
        """Errors into errors.log and one line on the console; the plan's counts and estimate."""
        if result.tracebacks:
            with open(self.run_dir / "errors.log", "a", encoding="utf-8") as log:
                log.write("\n".join(result.tracebacks) + "\n")
        if result.status == "failed":
            where = " (traceback in errors.log)" if result.tracebacks else ""
            reason = result.reason.splitlines()[0] if result.reason else "no reason"
            self.reporter.log(f"{result.job.label}: FAILED: {reason}{where}")
        self.plan.job_done(result.job.kind, result.seconds)

    def _close(self, cells: list[Cell], status: str, reason: str) -> None:
        for cell in cells:
            self._write_cell(cell, closed_rows(self.run_id, cell, shapes(self.suite), status, reason))

    def _write_cell(self, cell: Cell, rows: list[dict]) -> None:
        peak = self.peaks.get(self.peak_keys.get(cell.cell_id))
        for row in rows:
            if row["status"] == "ok" and peak is not None:
                row["roofline_peak"] = peak      # this run's peak, also for rows served from the cache
            self.results.append(row)
            self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        status = cell_status(rows)
        self.plan.cell_done(status)
        if status == "failed" and self.settings.fail_fast:
            raise StopRun(cell.cell_id)

    @staticmethod
    def _cells_of(cells: list[Cell], task: str, pipeline: str) -> list[Cell]:
        return [c for c in cells if c.task == task and c.pipeline.name == pipeline]
