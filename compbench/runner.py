"""Executing a suite: plan of cells -> artifacts -> sessions -> measured rows."""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from compbench import envinfo
from compbench.artifact import ArtifactStore, ModelArtifact
from compbench.backends import BACKENDS, BackendOptions
from compbench.encoding import timing_batch
from compbench.errors import DataNotFoundError, UnsupportedError, UsageError
from compbench.finetune import finetuned_teacher
from compbench.measure import evaluate_session, max_abs_difference, size_of, split_logits, time_session
from compbench.models import resolve_model
from compbench.pipeline import PipelineBuild
from compbench.progress import Reporter
from compbench.report import write_reports
from compbench.results import ResultsFile, empty_row, write_labels
from compbench.suite import Cell, Suite, expand
from compbench.tasks import DataSource, TaskData, get_task, load_task_data, resolve_data_source


@dataclass
class RunOptions:
    data_dir: str | None = None
    limit_train: int | None = None
    limit_eval: int | None = None
    results_dir: Path = Path("results")
    run_id: str | None = None
    cache_dir: str | None = None
    reporter: Reporter = field(default_factory=Reporter)


@dataclass
class RunSummary:
    run_dir: Path
    counts: dict[str, int]
    seconds: float

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def default_cache_dir(suite: Suite, option: str | None) -> Path:
    if option:
        return Path(option).expanduser()
    if os.environ.get("COMPBENCH_CACHE_DIR"):
        return Path(os.environ["COMPBENCH_CACHE_DIR"]).expanduser()
    if suite.cache_dir:
        return suite.resolve_path(suite.cache_dir)
    return Path.home() / ".cache" / "compbench"


def new_run_dir(results_dir: Path, suite: Suite, run_id: str | None) -> Path:
    base = run_id or f"{suite.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = results_dir / base, 1
    while run_dir.exists():
        n += 1
        run_dir = results_dir / f"{base}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


class SuiteRun:
    """One execution of a suite into one results folder."""

    def __init__(self, suite: Suite, suite_path: Path, options: RunOptions) -> None:
        self.suite, self.options, self.reporter = suite, options, options.reporter
        suite_dir = suite.resolve_path(suite.data.dir) if suite.data.dir and suite.data.dir != "hub" else suite.data.dir
        try:
            self.source: DataSource = resolve_data_source(options.data_dir, suite_dir)
        except DataNotFoundError as exc:
            raise UsageError(str(exc)) from None
        self.base_model = resolve_model(suite.model, suite.resolve_path("."))
        self.store = ArtifactStore(default_cache_dir(suite, options.cache_dir))
        self.run_dir = new_run_dir(Path(options.results_dir), suite, options.run_id)
        self.run_id = self.run_dir.name
        self.results = ResultsFile(self.run_dir / "results.jsonl")
        shutil.copyfile(suite_path, self.run_dir / "suite.yaml")
        (self.run_dir / "env.json").write_text(json.dumps(envinfo.collect(), indent=2))
        self.counts: dict[str, int] = {}
        self._reference_logits: dict[str, object] = {}   # artifact hash -> PyTorch fp32 logits

    # ------------------------------------------------------------------ plan

    def execute(self) -> RunSummary:
        start = time.perf_counter()
        cells = expand(self.suite)
        self.reporter.log(f"compbench: {len(cells)} cells ({len(self.suite.tasks)} tasks x {len(self.suite.pipelines)} pipelines x {len(self.suite.backends)} backends) -> {self.run_dir}")
        self.reporter.log(f"data: {self.source.description}; model: {self.base_model.reference} ({self.base_model.location})")
        try:
            for task_name in self.suite.tasks:
                self._run_task(task_name, [c for c in cells if c.task == task_name])
        finally:   # on Ctrl-C too: the reports show every row finished so far
            write_reports(self.run_dir)
        seconds = time.perf_counter() - start
        self.reporter.log(f"compbench: done in {seconds:.0f}s: " + ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) + f" rows; report: {self.run_dir / 'report.md'}")
        return RunSummary(self.run_dir, dict(self.counts), seconds)

    def _run_task(self, task_name: str, cells: list[Cell]) -> None:
        data_cfg = self.suite.data
        try:
            data = load_task_data(
                get_task(task_name), self.source, seed=data_cfg.seed,
                limit_train=self.options.limit_train or data_cfg.limit_train,
                limit_eval=self.options.limit_eval or data_cfg.limit_eval,
            )
        except DataNotFoundError as exc:
            self.reporter.log(f"{task_name}: skipped: {exc}")
            return self._close_cells(cells, "skipped", str(exc))
        write_labels(self.run_dir, task_name, {split: frame["label"].tolist() for split, frame in data.eval.items()})
        try:
            teacher = finetuned_teacher(self.base_model, data, self.suite.teacher, self.store, self.reporter)
        except Exception as exc:
            return self._close_cells(cells, "failed", self._describe_failure(f"{task_name} teacher", exc))
        def retrain_teacher(seed: int) -> ModelArtifact:
            recipe = self.suite.teacher.model_copy(update={"seed": seed})
            return finetuned_teacher(self.base_model, data, recipe, self.store, self.reporter)

        builder = PipelineBuild(teacher, data, self.store, seed=self.suite.seed, device="cpu", reporter=self.reporter,
                                max_seq_len=self.suite.teacher.max_seq_len, retrain_teacher=retrain_teacher)
        for pipeline in self.suite.pipelines:
            pipeline_cells = [c for c in cells if c.pipeline.name == pipeline.name]
            try:
                artifact = builder.run(pipeline)
            except UnsupportedError as exc:
                self._close_cells(pipeline_cells, "skipped", str(exc))
                continue
            except Exception as exc:
                self._close_cells(pipeline_cells, "failed", self._describe_failure(f"{task_name}/{pipeline.name}", exc))
                continue
            for cell in pipeline_cells:
                self._measure_cell(cell, artifact, data)

    # ------------------------------------------------------------------ cells

    def _measure_cell(self, cell: Cell, artifact: ModelArtifact, data: TaskData) -> None:
        backend = BACKENDS.get(cell.backend.name)()
        availability = backend.availability(cell.backend)
        if not availability.ok:
            return self._close_cells([cell], "skipped", availability.reason)
        self.reporter.log(f"{cell.cell_id}: measuring")
        try:
            session = backend.load(artifact, cell.backend)
        except UnsupportedError as exc:
            return self._close_cells([cell], "skipped", str(exc))
        except Exception as exc:
            return self._close_cells([cell], "failed", self._describe_failure(cell.cell_id, exc))
        try:
            self._measure_session(cell, session, artifact, data)
        finally:
            session.close()

    def _measure_session(self, cell: Cell, session, artifact: ModelArtifact, data: TaskData) -> None:
        try:
            tokenizer = artifact.tokenizer()
            accuracy, logits = evaluate_session(session, tokenizer, data, self.suite.teacher.max_seq_len, self.suite.measure, self.suite.seed)
            common = {**size_of(artifact, session), **accuracy, "artifact": str(artifact.path), "artifact_hash": artifact.hash,
                      "artifact_format": artifact.format, "artifact_precision": artifact.precision,
                      "parity_max_abs_diff": self._parity(cell, artifact, data, logits),
                      "lineage": artifact.lineage, "data_source": data.source, "train_rows": len(data.train)}
        except Exception as exc:
            return self._close_cells([cell], "failed", self._describe_failure(cell.cell_id, exc))
        timing_rows = next(iter(data.eval.values()))
        for batch_size, seq_len in self._shapes():
            row = self._row(cell, batch_size, seq_len, **common)
            try:
                batch = timing_batch(tokenizer, data.task, timing_rows, batch_size, seq_len, seed=self.suite.seed)
                latency = time_session(session, batch, self.suite.measure)
                row.update(status="ok", latency_ms=latency, throughput_per_s=batch_size * 1000.0 / latency["mean"])
                self.reporter.log(f"  batch {batch_size} x {seq_len}: p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms (n={latency['n']})")
            except Exception as exc:
                row.update(status="failed", reason=self._describe_failure(f"{cell.cell_id} batch {batch_size}", exc))
            self._write(row)

    def _parity(self, cell: Cell, artifact: ModelArtifact, data: TaskData, logits) -> float | None:
        """Max |logit difference| against PyTorch fp32 on CPU for the same fp32 model and rows
        (None for PyTorch itself and for models that are not fp32 weights)."""
        if cell.backend.name == "torch" or artifact.precision != "fp32":
            return None
        if artifact.hash not in self._reference_logits:
            try:
                reference = BACKENDS.get("torch")().load(artifact, BackendOptions(name="torch"))
            except UnsupportedError:       # a format PyTorch cannot load: nothing to compare with
                return None
            try:
                rows = next(iter(data.eval.values()))
                self._reference_logits[artifact.hash], _ = split_logits(
                    reference, artifact.tokenizer(), data, rows, self.suite.teacher.max_seq_len, self.suite.measure.eval_batch_size)
            finally:
                reference.close()
        return max_abs_difference(logits, self._reference_logits[artifact.hash])

    def _shapes(self) -> list[tuple[int, int]]:
        return [(b, s) for b in self.suite.measure.batch_sizes for s in self.suite.measure.seq_lens]

    def _row(self, cell: Cell, batch_size: int, seq_len: int, **values) -> dict:
        options = cell.backend
        return empty_row(
            run_id=self.run_id, cell_id=cell.cell_id, task=cell.task, pipeline=cell.pipeline.name,
            steps=[{"compressor": s.compressor, "params": s.params} for s in cell.pipeline.steps],
            backend=options.name, profile=options.profile, device=options.device, precision=options.precision,
            threads=options.resolved_threads(), batch_size=batch_size, seq_len=seq_len, **values,
        )

    def _close_cells(self, cells: list[Cell], status: str, reason: str) -> None:
        for cell in cells:
            for batch_size, seq_len in self._shapes():
                self._write(self._row(cell, batch_size, seq_len, status=status, reason=reason))

    def _write(self, row: dict) -> None:
        self.results.append(row)
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1

    def _describe_failure(self, where: str, exc: Exception) -> str:
        reason = f"{type(exc).__name__}: {exc}".strip()
        with open(self.run_dir / "errors.log", "a", encoding="utf-8") as log:
            log.write(f"--- {where}\n{traceback.format_exc()}\n")
        self.reporter.log(f"{where}: FAILED: {reason.splitlines()[0] if reason else type(exc).__name__} (traceback in errors.log)")
        return reason


def run_suite(suite: Suite, suite_path: Path, options: RunOptions) -> RunSummary:
    return SuiteRun(suite, Path(suite_path), options).execute()
