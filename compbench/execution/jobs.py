"""The units of work a run hands to an executor, and doing one of them.

A run is three kinds of job: a **build** makes the artifact at the end of one (task, pipeline)
(the teacher for the baseline), through the content-addressed store; a **peak** job measures
the machine's dense matmul rate for one (device, threads, dtype), the roof that cells' achieved
GFLOP/s are read against; a **measure** job measures one cell (task, pipeline, backend) on that
artifact and yields its rows. A job is plain data (JSON), so it runs the same in this process,
in a fresh subprocess or on a Ray worker: ``run_job`` rebuilds the suite, data and store from
``RunSettings``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compbench.cache.store import ArtifactStore
from compbench.common.errors import DataNotFoundError, Failures, UnsupportedError, UsageError
from compbench.common.locks import machine_timing_lock
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.cells import Cell, expand
from compbench.config.loading import load_suite
from compbench.config.schema import Suite
from compbench.config.settings import RunSettings, default_cache_dir
from compbench.measurement.cell import CellMeasurement
from compbench.models.artifact import ModelArtifact
from compbench.models.kinds import CAUSAL_LM, model_kind
from compbench.models.references import ResolvedModel, resolve_model
from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data
from compbench.tasks.data import TaskData, load_task_data
from compbench.tasks.files import FileTaskConfig, resolve_file_task
from compbench.tasks.glue import TASKS, TaskSpec, get_task
from compbench.tasks.sources import DataSource, resolve_data_source
from compbench.training.finetune import finetuned_teacher, head_labels, head_problem

BUILD, MEASURE, PEAK = "build", "measure", "peak"


@dataclass(frozen=True)
class Job:
    kind: str                  # BUILD, PEAK or MEASURE
    task: str
    pipeline: str
    backend: str | None = None   # a measure job's backend label; a peak job's ``device:threads:dtype``
    artifact_hash: str | None = None   # a measure job's artifact ...
    reference_hash: str | None = None  # ... and the teacher's, timed alongside it (None for the teacher itself)
    cpus: int = 1              # what the job asks of a Ray cluster: cores ...
    gpus: int = 0              # ... and GPUs

    @property
    def timing(self) -> bool:
        """Whether the job times something: no other timing may share its machine meanwhile."""
        return self.kind in (MEASURE, PEAK)

    def timeout(self, settings: RunSettings) -> float | None:
        """Seconds this job may take in its own process (builds and measurements have their own limits)."""
        return settings.build_timeout if self.kind == BUILD else settings.cell_timeout

    @property
    def label(self) -> str:
        if self.kind == PEAK:
            return f"matmul peak {self.backend}"
        return f"{self.task}/{self.pipeline}" + (f"/{self.backend}" if self.backend else "")


def peak_job(device: str, threads: int, dtype: str) -> Job:
    return Job(PEAK, "", "", f"{device}:{threads}:{dtype}", cpus=threads, gpus=1 if device.startswith("cuda") else 0)


@dataclass
class JobResult:
    job: Job
    status: str                            # ok, failed or skipped
    reason: str | None = None
    artifact_hash: str | None = None       # a build's artifact
    rows: list[dict] = field(default_factory=list)   # a measure job's rows
    tracebacks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "job": asdict(self.job)}

    @classmethod
    def from_json(cls, value: dict) -> "JobResult":
        return cls(**{**value, "job": Job(**value["job"])})


def load_run_suite(settings: RunSettings) -> Suite:
    suite = load_suite(settings.suite_file)
    suite._base_dir = Path(settings.base_dir)
    return suite


def data_source(suite: Suite, data_dir: str | None) -> DataSource:
    """Where the suite's data comes from (the command line's folder first); a usage error if it is not there."""
    suite_dir = suite.data.dir
    if suite_dir and suite_dir != "hub":
        suite_dir = str(suite.resolve_path(suite_dir))
    try:
        return resolve_data_source(data_dir, suite_dir)
    except DataNotFoundError as exc:
        raise UsageError(str(exc)) from None


def check_tasks(suite: Suite, data_dir: str | None, cache_dir: str | None = None) -> None:
    """Before a run starts, a usage error for what would fail every cell of a task: GLUE data that is not there,
    a task file that cannot be read as declared, a given teacher (``teacher.finetune: false``) whose head does not
    fit a task."""
    glue = data_source(suite, data_dir) if uses_glue(suite) else None
    specs = [task_source(suite, task, glue)[0] for task in suite.task_names]
    for entry in suite.tasks:        # a causal-LM task's corpus files are read now: a mistake in them is one line
        if isinstance(entry, LanguageModelingConfig):
            load_language_modeling_data(entry, glue, suite.resolve_path("."), limit_train=1, limit_eval=1)
    language = [spec for spec in specs if spec.is_language_modeling]
    if suite.teacher.finetune and not language:
        return
    model = resolve_model(suite.model, suite.resolve_path("."), default_cache_dir(suite, cache_dir))
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model.location)
    except OSError:       # a hub id that cannot be reached now: its build says why
        return
    if language and model_kind(config) != CAUSAL_LM:
        raise UsageError(f"task {language[0].name} scores a causal language model, but {suite.model} is a "
                         f"{', '.join(getattr(config, 'architectures', None) or [config.model_type])}; give model: a "
                         "causal LM (e.g. smollm2-135m, a folder or hub id of a ...ForCausalLM)")
    for task in suite.task_names if not suite.teacher.finetune else ():
        spec = task_source(suite, task, glue, head_labels(config))[0]     # a task's labels in the head's order
        if spec.is_language_modeling:
            continue
        problem = head_problem(config, spec)
        if problem:
            raise UsageError(f"teacher.finetune is false, so {suite.model} is the {spec.name} teacher as it is, but "
                             f"{problem}")


def task_source(suite: Suite, task: str, glue_source: DataSource | None,
                head: tuple[str, ...] | None = None) -> tuple[TaskSpec, DataSource]:
    """The spec of one of the suite's tasks and where its rows come from: a GLUE task from ``glue_source``, a task
    from files from its own (read, checked and its labels mapped by ``tasks.files``; ``head``: a given teacher's
    labels in output order, which a ``labels:`` mapping follows)."""
    entry = suite.task_entry(task)
    if isinstance(entry, str):
        return get_task(entry), glue_source
    if isinstance(entry, LanguageModelingConfig):
        return entry.spec(), glue_source
    return resolve_file_task(entry, suite.resolve_path("."), seed=suite.data.seed, head=head)


def uses_glue(suite: Suite) -> bool:
    """Whether any of the suite's tasks reads the GLUE data folder."""
    return any(isinstance(entry, str) or (isinstance(entry, LanguageModelingConfig) and entry.needs_glue())
               for entry in suite.tasks)


class RunContext:
    """A run's suite, data source, base model and store, rebuilt from ``RunSettings`` in
    whichever process does the job; task data and pipeline builders are kept per task."""

    def __init__(self, settings: RunSettings, reporter: Reporter) -> None:
        self.settings, self.reporter = settings, reporter
        self.suite = load_run_suite(settings)
        self._glue_source: DataSource | None = None
        self.base_model: ResolvedModel = resolve_model(self.suite.model, self.suite.resolve_path("."),
                                                       Path(settings.cache_dir))
        self.store = ArtifactStore(Path(settings.cache_dir), warn=lambda message: reporter.log(f"warning: {message}"))
        self._data: dict[str, TaskData] = {}
        self._builders: dict[str, PipelineBuild] = {}

    @property
    def source(self) -> DataSource:
        """Where the suite's GLUE tasks are read (looked up when a GLUE task first needs it)."""
        if self._glue_source is None:
            self._glue_source = data_source(self.suite, self.settings.data_dir)
        return self._glue_source

    @functools.cached_property
    def given_head(self) -> tuple[str, ...] | None:
        """The labels of the given teacher's head in output order (``teacher.finetune: false``), else None."""
        if self.suite.teacher.finetune:
            return None
        from transformers import AutoConfig

        return head_labels(AutoConfig.from_pretrained(self.base_model.location))

    def data_description(self) -> str:
        """Where the suite's tasks come from, in words."""
        places = [self.source.description] if uses_glue(self.suite) else []
        files = [entry.name for entry in self.suite.tasks if isinstance(entry, FileTaskConfig)]
        return "; ".join(places + ([f"{', '.join(files)} from their files"] if files else []))

    def task_data(self, task: str) -> TaskData:
        entry = self.suite.task_entry(task)
        if task not in self._data and isinstance(entry, LanguageModelingConfig):
            self._data[task] = load_language_modeling_data(
                entry, self.source if entry.needs_glue() else None, self.suite.resolve_path("."),
                seed=self.suite.data.seed, limit_train=self.settings.limit_train, limit_eval=self.settings.limit_eval)
        if task not in self._data:
            spec, source = task_source(self.suite, task, self.source if task in TASKS else None, self.given_head)
            self._data[task] = load_task_data(
                spec,
                source,
                seed=self.suite.data.seed,
                limit_train=self.settings.limit_train,
                limit_eval=self.settings.limit_eval,
            )
        return self._data[task]

    def teacher(self, task: str, seed: int | None = None) -> ModelArtifact:
        recipe = self.suite.teacher if seed is None else self.suite.teacher.model_copy(update={"seed": seed})
        return finetuned_teacher(self.base_model, self.task_data(task), recipe, self.store, self.reporter)

    def builder(self, task: str) -> PipelineBuild:
        if task not in self._builders:
            self._builders[task] = PipelineBuild(
                self.teacher(task), self.task_data(task), self.store, seed=self.suite.seed, device="cpu",
                base_dir=self.suite.resolve_path("."),
                reporter=self.reporter, max_seq_len=self.suite.teacher.max_seq_len,
                retrain_teacher=lambda seed: self.teacher(task, seed))
        return self._builders[task]

    def artifact(self, artifact_hash: str | None) -> ModelArtifact | None:
        """The stored artifact, checked against its seal (None for None); a job whose artifact is gone from the
        cache, or damaged, fails with why."""
        if artifact_hash is None:
            return None
        return self.store.require(artifact_hash)

    def pipeline(self, name: str):
        return next(p for p in self.suite.pipelines if p.name == name)

    def cell(self, job: Job) -> Cell:
        return next(c for c in expand(self.suite) if c.task == job.task and c.pipeline.name == job.pipeline
                    and c.backend.label == job.backend)


def run_job(context: RunContext, job: Job) -> JobResult:
    """Do ``job``; every error becomes the result's status and reason, never an exception."""
    start = time.perf_counter()
    failures = Failures()
    try:
        result = JOB_KINDS[job.kind](context, job, failures)
    except (UnsupportedError, DataNotFoundError) as exc:
        result = JobResult(job, "skipped", str(exc))
    except Exception as exc:
        result = JobResult(job, "failed", failures.describe(job.label, exc))
    result.tracebacks = failures.tracebacks
    result.seconds = time.perf_counter() - start
    return result


def _build(context: RunContext, job: Job, failures: Failures) -> JobResult:
    artifact = context.builder(job.task).run(context.pipeline(job.pipeline))
    return JobResult(job, "ok", artifact_hash=artifact.hash)


def _measure(context: RunContext, job: Job, failures: Failures) -> JobResult:
    cell = context.cell(job)
    artifact, reference = (context.artifact(artifact_hash) for artifact_hash in (job.artifact_hash, job.reference_hash))
    measurement = CellMeasurement(context.suite, context.settings.run_id, context.store, context.reporter, failures)
    rows = measurement.measure(cell, artifact, context.task_data(job.task), reference)
    return JobResult(job, "ok", rows=rows)


def _peak(context: RunContext, job: Job, failures: Failures) -> JobResult:
    from compbench.measurement.peak import measure_run_peak

    device, threads, dtype = job.backend.rsplit(":", 2)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return JobResult(job, "skipped", "CUDA is not available on the machine that got this job")
    with machine_timing_lock(context.reporter.waiting):
        peak = measure_run_peak(device, int(threads), dtype)    # an emulated precision: skipped with the reason
    return JobResult(job, "ok", rows=[peak.to_json()])


JOB_KINDS = {BUILD: _build, MEASURE: _measure, PEAK: _peak}
