"""Executing a suite: plan of cells -> builds -> measurements -> rows, durable and resumable.

The runner plans in its own process and hands the work to an executor as jobs (see
``jobs.py``): first the pipeline builds that the artifact store does not hold yet (the
teacher first, a pipeline after any pipeline its steps extend), then one measurement job per
cell that the result cache cannot serve. Each finished cell's rows are appended to
``results.jsonl`` at once, so a killed run keeps them, and ``--resume`` runs only the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from compbench import envinfo
from compbench.backends import BACKENDS
from compbench.cells import closed_rows
from compbench.errors import DataNotFoundError, UsageError
from compbench.executors import ExecutorOptions, make_executor
from compbench.finetune import teacher_key
from compbench.jobs import BUILD, MEASURE, PEAK, Job, JobResult, RunContext, RunSettings, data_source, peak_job
from compbench.pipeline import planned_hash
from compbench.progress import Reporter
from compbench.report import write_reports
from compbench.result_cache import ResultCache, cell_key
from compbench.results import ResultsFile, read_rows, write_labels
from compbench.suite import BASELINE, Cell, PipelineConfig, Suite, expand, load_suite

RUN_FILE = "run.json"     # how the run was started: what --resume needs


@dataclass
class RunOptions:
    data_dir: str | None = None
    limit_train: int | None = None
    limit_eval: int | None = None
    results_dir: Path = Path("results")
    run_id: str | None = None
    cache_dir: str | None = None
    reporter: Reporter = field(default_factory=Reporter)
    executor: str = "local"
    address: str | None = None              # Ray cluster
    isolation: str | None = None            # overrides the suite's runner section ...
    cell_timeout: float | None = None
    build_timeout: float | None = None
    build_cpus: int | None = None           # cores a build asks of Ray (default: this machine's)
    fail_fast: bool = False
    remeasure: bool = False                 # ignore cached cell results (artifacts are still reused)


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


def default_cache_dir(suite: Suite | None, option: str | None) -> Path:
    """--cache-dir, else COMPBENCH_CACHE_DIR, else the suite's cache_dir, else ~/.cache/compbench."""
    if option:
        return Path(option).expanduser().resolve()
    if os.environ.get("COMPBENCH_CACHE_DIR"):
        return Path(os.environ["COMPBENCH_CACHE_DIR"]).expanduser().resolve()
    if suite is not None and suite.cache_dir:
        return suite.resolve_path(suite.cache_dir)
    return Path.home() / ".cache" / "compbench"


def new_run_dir(results_dir: Path, suite: Suite, run_id: str | None) -> Path:
    base = run_id or f"{suite.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = results_dir / base, 1
    while run_dir.exists():
        n += 1
        run_dir = results_dir / f"{base}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir.resolve()


def start_run(suite_path: Path, options: RunOptions) -> "SuiteRun":
    """A new run folder for ``suite_path``: the suite's copy, ``run.json`` and ``env.json``."""
    suite = load_suite(suite_path)
    data_source(suite, options.data_dir)       # a missing data folder is a usage error before any folder is made
    run_dir = new_run_dir(Path(options.results_dir), suite, options.run_id)
    shutil.copyfile(suite_path, run_dir / "suite.yaml")
    settings = RunSettings(
        suite_file=str(run_dir / "suite.yaml"), base_dir=str(Path(suite_path).resolve().parent), run_dir=str(run_dir),
        run_id=run_dir.name, cache_dir=str(default_cache_dir(suite, options.cache_dir)), data_dir=options.data_dir,
        limit_train=options.limit_train, limit_eval=options.limit_eval)
    record = {"suite": str(Path(suite_path).resolve()), "settings": asdict(settings),
              "executor": executor_record(suite, options), "started": datetime.now().isoformat(timespec="seconds")}
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=2))
    (run_dir / "env.json").write_text(json.dumps(envinfo.collect(), indent=2))
    return SuiteRun(suite, settings, options)


def executor_record(suite: Suite, options: RunOptions) -> dict:
    runner = suite.runner
    return {"executor": options.executor, "address": options.address,
            "isolation": options.isolation or runner.isolation,
            "cell_timeout": options.cell_timeout or runner.cell_timeout,
            "build_timeout": options.build_timeout or runner.build_timeout,
            "build_cpus": options.build_cpus, "fail_fast": options.fail_fast, "remeasure": options.remeasure}


def resume_run(run_dir: Path, options: RunOptions) -> "SuiteRun":
    """The run in ``run_dir`` again, with its recorded settings: only cells without a complete
    ``ok``/``skipped`` set of rows run (failed cells are tried again)."""
    run_dir = Path(run_dir).resolve()
    record_path = run_dir / RUN_FILE
    if not record_path.is_file():
        raise UsageError(f"{run_dir} has no {RUN_FILE}; --resume takes a run folder that compbench run made, such as results/quick-20260101-120000")
    record = json.loads(record_path.read_text())
    settings = RunSettings(**record["settings"])
    suite = load_suite(settings.suite_file)
    suite._base_dir = Path(settings.base_dir)
    recorded = record.get("executor", {})
    for name in ("executor", "address", "isolation", "cell_timeout", "build_timeout", "build_cpus"):
        if getattr(options, name) in (None, "local") and recorded.get(name) is not None:
            setattr(options, name, recorded[name])
    options.fail_fast = options.fail_fast or recorded.get("fail_fast", False)
    options.remeasure = options.remeasure or recorded.get("remeasure", False)
    return SuiteRun(suite, settings, options, resuming=True)


def complete_cells(rows: list[dict], suite: Suite) -> dict[str, list[dict]]:
    """Rows of the cells that need not run again: every shape present, none failed."""
    wanted = {(b, s) for b in suite.measure.batch_sizes for s in suite.measure.seq_lens}
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["cell_id"], []).append(row)
    return {cell_id: cell_rows for cell_id, cell_rows in by_cell.items()
            if {(r["batch_size"], r["seq_len"]) for r in cell_rows} == wanted and len(cell_rows) == len(wanted)
            and all(r["status"] in ("ok", "skipped") for r in cell_rows)}


def cell_status(rows: list[dict]) -> str:
    statuses = {row["status"] for row in rows}
    return "failed" if "failed" in statuses else "ok" if "ok" in statuses else "skipped"


class SuiteRun:
    """One execution (or resumption) of a suite into one results folder."""

    def __init__(self, suite: Suite, settings: RunSettings, options: RunOptions, resuming: bool = False) -> None:
        self.suite, self.settings, self.options, self.reporter = suite, settings, options, options.reporter
        self.run_dir, self.run_id = Path(settings.run_dir), settings.run_id
        self.resuming = resuming
        self.results = ResultsFile(self.run_dir / "results.jsonl")
        self.result_cache = ResultCache(Path(settings.cache_dir))
        self.counts: dict[str, int] = {}
        self.peaks: dict[tuple[str, int, str], dict] = {}    # (device, threads, dtype) -> this run's matmul peak
        self.peak_keys: dict[str, tuple[str, int, str]] = {}   # cell id -> the peak its rows are read against
        runner = suite.runner
        self.executor_options = ExecutorOptions(
            isolation=options.isolation or runner.isolation, cell_timeout=options.cell_timeout or runner.cell_timeout,
            build_timeout=options.build_timeout or runner.build_timeout, address=options.address)

    # ------------------------------------------------------------------ plan

    def execute(self) -> RunSummary:
        start = time.perf_counter()
        cells = expand(self.suite)
        done = self._keep_finished_rows() if self.resuming else {}
        todo = [cell for cell in cells if cell.cell_id not in done]
        verb = f"resuming {self.run_dir}: {len(done)} of {len(cells)} cells already done" if self.resuming else f"{len(cells)} cells"
        self.reporter.log(f"compbench: {verb} ({len(self.suite.tasks)} tasks x {len(self.suite.pipelines)} pipelines x "
                          f"{len(self.suite.backends)} backends) -> {self.run_dir}")
        context = RunContext(self.settings, self.reporter)
        self.reporter.log(f"data: {context.source.description}; model: {context.base_model.reference} ({context.base_model.location}); "
                          f"cache: {self.settings.cache_dir}")
        stopped = False
        executor = None
        try:
            with self.reporter.plan(len(cells)) as plan:
                self.plan = plan
                for rows in done.values():
                    plan.cell_done(cell_status(rows))
                executor = make_executor(self.options.executor, self.settings, self.executor_options, self.reporter)
                todo = self._runnable(todo)
                artifacts = self._builds(context, todo, executor)
                self._measurements(context, todo, artifacts, executor)
        except StopRun:
            stopped = True
            self.reporter.log(f"compbench: stopped at the first failed cell (--fail-fast); resume with: compbench run --resume {self.run_dir}")
        finally:   # on Ctrl-C too: the reports show every row finished so far
            if executor is not None:
                executor.close()
            write_reports(self.run_dir)
        seconds = time.perf_counter() - start
        self.reporter.log(f"compbench: done in {seconds:.0f}s: " + ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) +
                          f" rows; report: {self.run_dir / 'report.md'}")
        return RunSummary(self.run_dir, dict(self.counts), seconds, stopped)

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
        if self.options.executor != "local":
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

    def _builds(self, context: RunContext, todo: list[Cell], executor) -> dict[tuple[str, str], str]:
        """Artifact hash of every (task, pipeline) with cells to measure; cells whose data or
        build is missing are closed here."""
        artifacts: dict[tuple[str, str], str] = {}
        needed: list[tuple[str, PipelineConfig, str]] = []       # (task, pipeline, planned hash)
        for task in self.suite.tasks:
            task_cells = [c for c in todo if c.task == task]
            if not task_cells:
                continue
            try:
                data = context.task_data(task)
            except DataNotFoundError as exc:
                self.reporter.log(f"{task}: skipped: {exc}")
                self._close(task_cells, "skipped", str(exc))
                continue
            write_labels(self.run_dir, task, {split: frame["label"].tolist() for split, frame in data.eval.items()})
            teacher_hash = teacher_key(context.base_model, data, self.suite.teacher)
            teacher_cached = context.store.get(teacher_hash) is not None
            if teacher_cached:
                self.reporter.log(f"{task}: teacher from cache ({context.store.path_for(teacher_hash)})")
            task_needs = []
            for pipeline in self.suite.pipelines:
                if not any(c.pipeline.name == pipeline.name for c in task_cells):
                    continue
                expected = planned_hash(teacher_hash, pipeline, data.fingerprint)
                if context.store.get(expected) is not None:
                    artifacts[(task, pipeline.name)] = expected
                else:
                    task_needs.append((task, pipeline, expected))
            if task_needs and not teacher_cached and not any(p.name == BASELINE for _, p, _ in task_needs):
                task_needs.append((task, self._pipeline(BASELINE), teacher_hash))   # the teacher comes first
            needed += task_needs
        if not needed:
            return artifacts
        self.reporter.log(f"compbench: {len(needed)} builds to do, {len(artifacts)} artifacts from the cache")
        self.plan.expect(BUILD, len(needed))
        failed: dict[tuple[str, str], str] = {}
        for level in _build_levels(needed):
            jobs = []
            for task, pipeline in level:
                blocker = next((f"its steps start with pipeline {other!r}, whose build failed: {why}"
                                for (t, other), why in failed.items() if t == task and _extends(pipeline, self._pipeline(other))), None)
                if blocker:
                    failed[(task, pipeline.name)] = blocker
                    self._close(self._cells_of(todo, task, pipeline.name), "failed", blocker)
                    continue
                jobs.append(Job(BUILD, task, pipeline.name, cpus=self.options.build_cpus or os.cpu_count() or 1))
            for result in executor.run(jobs, self._started):
                self._note(result)
                key = (result.job.task, result.job.pipeline)
                if result.status == "ok":
                    artifacts[key] = result.artifact_hash
                else:
                    failed[key] = result.reason or result.status
                    self._close(self._cells_of(todo, *key), result.status, result.reason or "")
                self.plan.checkpoint()
        return artifacts

    # ------------------------------------------------------------------ measurements

    def _measurements(self, context: RunContext, todo: list[Cell], artifacts: dict[tuple[str, str], str], executor) -> None:
        planned = []      # (cell, artifact hash): cells that can be measured here
        for cell in todo:
            artifact_hash = artifacts.get((cell.task, cell.pipeline.name))
            if artifact_hash is None:
                continue      # closed by its build
            planned.append((cell, artifact_hash))
        precisions = {artifact_hash: context.store.get(artifact_hash).precision for artifact_hash in {h for _, h in planned}}
        self.peak_keys = {cell.cell_id: peak_key(cell, precisions[artifact_hash]) for cell, artifact_hash in planned}
        self._measure_peaks(set(self.peak_keys.values()), executor)
        jobs, cells_by_job, served = [], {}, 0
        for cell, artifact_hash in planned:
            key = cell_key(self.suite, cell, artifact_hash, context.task_data(cell.task).fingerprint)
            cached = None if self.options.remeasure else self.result_cache.get(key, self.run_id)
            if cached is not None:
                self._write_cell(cell, cached)
                served += 1
                continue
            job = Job(MEASURE, cell.task, cell.pipeline.name, cell.backend.label, artifact_hash,
                      cpus=cell.backend.resolved_threads(), gpus=1 if cell.backend.device == "cuda" else 0)
            jobs.append(job)
            cells_by_job[job] = (cell, key)
        if served:
            self.reporter.log(f"compbench: {served} cells from the result cache (measured earlier on this machine; "
                              f"--remeasure times them again); {len(jobs)} to measure")
        self.plan.expect(MEASURE, len(jobs))
        for result in executor.run(jobs, self._started):
            self._note(result)
            cell, key = cells_by_job[result.job]
            rows = result.rows or closed_rows(self.run_id, cell, self.suite, result.status if result.status != "ok" else "failed",
                                              result.reason or "the measurement gave no rows")
            for row in rows:
                row.setdefault("measured_in_run", self.run_id)
            self.result_cache.put(key, rows)
            self._write_cell(cell, rows)
            self.plan.checkpoint()

    def _measure_peaks(self, keys: set[tuple[str, int, str]], executor) -> None:
        """The dense matmul peak of each (device, threads, dtype) the cells run at, once per run."""
        jobs = [peak_job(*key) for key in sorted(keys)]
        self.plan.expect(PEAK, len(jobs))
        for result in executor.run(jobs, self._started):
            self._note(result)
            if result.status == "ok" and result.rows:
                peak = result.rows[0]
                self.peaks[(peak["device"], peak["threads"], peak["dtype"])] = peak
                self.reporter.log(f"compbench: {result.job.label}: {peak['gflops']:.1f} GFLOP/s")

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
            self.reporter.log(f"{result.job.label}: FAILED: {(result.reason or '').splitlines()[0] if result.reason else 'no reason'}{where}")
        self.plan.job_done(result.job.kind, result.seconds)

    def _close(self, cells: list[Cell], status: str, reason: str) -> None:
        for cell in cells:
            self._write_cell(cell, closed_rows(self.run_id, cell, self.suite, status, reason))

    def _write_cell(self, cell: Cell, rows: list[dict]) -> None:
        peak = self.peaks.get(self.peak_keys.get(cell.cell_id))
        for row in rows:
            if row["status"] == "ok" and peak is not None:
                row["roofline_peak"] = peak      # this run's peak, also for rows served from the cache
            self.results.append(row)
            self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        status = cell_status(rows)
        self.plan.cell_done(status)
        if status == "failed" and self.options.fail_fast:
            raise StopRun(cell.cell_id)

    def _pipeline(self, name: str) -> PipelineConfig:
        return next(p for p in self.suite.pipelines if p.name == name)

    @staticmethod
    def _cells_of(cells: list[Cell], task: str, pipeline: str) -> list[Cell]:
        return [c for c in cells if c.task == task and c.pipeline.name == pipeline]


PEAK_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


def peak_key(cell: Cell, artifact_precision: str) -> tuple[str, int, str]:
    """The (device, threads, dtype) whose matmul peak a cell's achieved rate is read against: the
    precision its arithmetic runs in (an int8 model's against the int8 peak, fp16 weights or a fp16
    backend against the fp16 peak), fp32 otherwise."""
    options = cell.backend
    precision = artifact_precision.split("-")[0] if options.precision == "fp32" else options.precision
    return options.device, options.resolved_threads(), PEAK_DTYPES.get(precision, "float32")


def _extends(pipeline: PipelineConfig, other: PipelineConfig) -> bool:
    """Whether ``pipeline``'s steps begin with all of ``other``'s (the baseline's none included)."""
    n = len(other.steps)
    return pipeline.name != other.name and n <= len(pipeline.steps) and pipeline.steps[:n] == other.steps


def _build_levels(needed: list[tuple[str, PipelineConfig, str]]) -> list[list[tuple[str, PipelineConfig]]]:
    """Builds in waves: a pipeline after every pipeline being built whose steps it extends (the
    teacher first), so no two jobs build the same step at once; within a wave, any order."""
    level: dict[tuple[str, str], int] = {}
    for task, pipeline, _ in sorted(needed, key=lambda item: len(item[1].steps)):
        below = [level[(task, other.name)] for t, other, _ in needed
                 if t == task and (task, other.name) in level and _extends(pipeline, other)]
        level[(task, pipeline.name)] = 1 + max(below, default=-1)
    waves: list[list[tuple[str, PipelineConfig]]] = [[] for _ in range(max(level.values()) + 1)]
    for task, pipeline, _ in needed:
        waves[level[(task, pipeline.name)]].append((task, pipeline))
    return waves


def run_suite(suite_path: Path, options: RunOptions) -> RunSummary:
    return start_run(Path(suite_path), options).execute()


def resume(run_dir: Path, options: RunOptions) -> RunSummary:
    return resume_run(Path(run_dir), options).execute()

