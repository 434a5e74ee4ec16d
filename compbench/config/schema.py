"""The suite file's schema (pydantic): every section rejects unknown keys, names are checked
against the registries, and a compressor's ``params`` / a backend's ``options`` against that
plugin's own settings model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from compbench.common.errors import UsageError
from compbench.common.fields import MAX_ROWS, bounded_int
from compbench.common.plugins import BACKENDS, COMPRESSORS
from compbench.common.registry import unknown_name_message
from compbench.config.backends import DEVICES, PROFILES, BackendOptions, Device
from compbench.config.error_lines import FieldError, ParamsError
from compbench.config.limits import MAX_SEQ_LEN, MAX_THREADS, MAX_TIMEOUT_SECONDS, MIN_SEQ_LEN, Seed
from compbench.config.measure import NATURAL, MeasureConfig
from compbench.config.training import TeacherConfig
from compbench.tasks.causal_lm import LanguageModelingConfig
from compbench.tasks.files import FileTaskConfig, labels_yaml
from compbench.tasks.glue import get_task, task_names

BASELINE = "baseline"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _known_task(name: str) -> str:
    try:
        get_task(name)
    except UsageError as exc:   # pydantic reports only ValueError/AssertionError with the field's location
        raise ValueError(str(exc)) from None
    return name


TaskName = Annotated[str, AfterValidator(_known_task)]


def _task_kind(value) -> str:
    """Which kind of task entry ``value`` is: a GLUE name, a causal-LM task (a mapping with a ``corpus``) or a task
    from files (any other mapping)."""
    if isinstance(value, str):
        return "glue-task"
    corpus = value.get("corpus") if isinstance(value, dict) else getattr(value, "corpus", None)
    return "language-modeling" if corpus is not None else "task-from-files"


# A GLUE task by name, a task from the user's files (a mapping: name, data, text, label, ...), or a causal-LM
# task (a mapping: name, corpus, zero_shot, ...).
TaskEntry = Annotated[Union[Annotated[TaskName, Tag("glue-task")], Annotated[FileTaskConfig, Tag("task-from-files")],
                            Annotated[LanguageModelingConfig, Tag("language-modeling")]],
                      Discriminator(_task_kind)]

# What may name a run folder: one path component, not hidden, no separators, no "..".
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run folder (None: it can)."""
    if RUN_NAME.fullmatch(name) and ".." not in name:
        return None
    return (f"{name!r} cannot name a run folder: use letters, digits and _ . + = - "
            "(no path separators, no '..', not starting with '.')")


def _run_name(name: str) -> str:
    problem = run_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


class DataConfig(Strict):
    dir: str | None = Field(
        None, description="local GLUE folder (parquet or TSV layout, relative to the suite file) or 'hub'"
    )
    limit_train: bounded_int(1, MAX_ROWS) | None = Field(None, description="seeded subset of the training rows")
    limit_eval: bounded_int(1, MAX_ROWS) | None = Field(None, description="seeded subset of the evaluation rows")
    seed: Seed = 0


class StepConfig(Strict):
    compressor: str = Field(description="a registered compressor; `compbench list` shows them")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("compressor")
    @classmethod
    def _known_compressor(cls, name: str) -> str:
        if name not in COMPRESSORS:
            raise ValueError(COMPRESSORS.unknown_name_message(name))
        return name

    @model_validator(mode="after")
    def _valid_params(self) -> "StepConfig":
        params_model = COMPRESSORS.get(self.compressor).Params
        self.params, errors = _validated_params(params_model, self.params)
        if errors:
            raise ParamsError(params_model, errors)
        return self


class RunnerConfig(Strict):
    """How cells are run: the suite's ``runner:`` section (the command line overrides it)."""

    isolation: Literal["subprocess", "inline"] = Field(
        "subprocess",
        description="each build and each cell in a fresh process (subprocess) or in the runner's own (inline)",
    )
    cell_timeout: float | None = Field(
        3600.0, gt=0, le=MAX_TIMEOUT_SECONDS,
        description="seconds one cell's measurement may take (subprocess isolation)",
    )
    build_timeout: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_SECONDS, description="seconds one pipeline's build may take, training included"
    )


class PipelineConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[^/\s]+$", description="unique within the suite; no '/' or spaces: "
                      "it is part of cell ids and file names")
    steps: list[StepConfig] = Field(default_factory=list)
    backends: list[str] | None = Field(
        None,
        description="measure only on these backends: a name (torch), a name and "
        "device (torch:cuda) or a backend's label (torch:cuda:default); "
        "default: every backend",
    )

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, names: list[str] | None) -> list[str] | None:
        for index, entry in enumerate(names or []):
            name, _, rest = entry.partition(":")
            device = rest.split(":")[0]
            if name not in BACKENDS:
                raise FieldError((index,), BACKENDS.unknown_name_message(name))
            if device and device not in DEVICES:
                raise FieldError((index,), unknown_name_message("device", device, list(DEVICES)))
        return names

    def runs_on(self, backend: BackendOptions) -> bool:
        return self.backends is None or any(entry in (backend.name, f"{backend.name}:{backend.device}", backend.label)
                                            for entry in self.backends)

    @model_validator(mode="after")
    def _chain_is_possible(self) -> "PipelineConfig":
        """Each step takes what the one before writes (the first: the teacher): an impossible chain (svd then
        bnb-int8, which would load the factorised model as plain weights) is refused before anything is built."""
        given = None    # the fine-tuned teacher
        for index, step in enumerate(self.steps):
            compressor = COMPRESSORS.get(step.compressor)
            params = compressor.Params.model_validate(step.params)
            problem = compressor.refusal(params, given)
            if problem:
                after = f"after {self.steps[index - 1].compressor}, " if index else ""
                raise FieldError(("steps", index), f"{after}{problem}")
            given = compressor.produces(params)
        return self

    @model_validator(mode="after")
    def _baseline_is_uncompressed(self) -> "PipelineConfig":
        if self.name == BASELINE and self.steps:
            raise FieldError(("steps",), f"the pipeline name {BASELINE!r} is reserved for the uncompressed teacher "
                                         "and takes no steps; give this pipeline another name")
        return self


class BackendConfig(BackendOptions):
    @field_validator("name")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in BACKENDS:
            raise ValueError(BACKENDS.unknown_name_message(name))
        return name

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        if profile not in PROFILES:
            raise ValueError(unknown_name_message("profile", profile, sorted(PROFILES)))
        return profile

    @model_validator(mode="after")
    def _valid_options(self) -> "BackendConfig":
        options_model = BACKENDS.get(self.name).Options
        _, errors = _validated_params(options_model, self.options)   # kept as written: it names the cell
        if errors:
            raise ParamsError(options_model, errors, field="options")
        return self


class ReferenceBackendConfig(BackendConfig):
    """The suite's ``reference_backend:``: the model as served today, which every cell's model (the teacher too) is
    also timed against, interleaved. A backend entry whose ``device`` and ``threads``, where not given, are each
    cell's (a profile that sets threads sets them): a 1-thread cell is compared with the reference at 1 thread, a
    CUDA cell with the reference on the GPU."""

    device: Device | None = Field(None, description="cpu or cuda; default: the cell's device")
    threads: bounded_int(1, MAX_THREADS) | None = Field(
        None, description="intra-op threads; default: the profile's, else the cell's"
    )


# List fields whose entries must differ: field -> (what an entry is, its identity, where in the entry that lives).
_UNIQUE_ENTRIES = {
    "tasks": ("task", lambda task: task if isinstance(task, str) else task.name, ()),
    "pipelines": ("pipeline name", lambda pipeline: pipeline.name, ("name",)),
    "backends": ("backend", lambda backend: backend.label, ()),
}


class Suite(Strict):
    name: Annotated[str, AfterValidator(_run_name)] = Field(min_length=1, description="names the run folders")
    description: str = ""
    model: str = Field("minilm-l6", description="base model: packaged alias, local folder or hub id")
    tasks: list[TaskEntry] = Field(min_length=1, description=f"GLUE tasks (from: {', '.join(task_names())}), "
                                                              "tasks from your own files: mappings (tasks.files), "
                                                              "or causal-LM tasks: mappings with a corpus "
                                                              "(tasks.causal_lm)")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    backends: list[BackendConfig] = Field(default_factory=lambda: [BackendConfig(name="torch")], min_length=1)
    reference_backend: ReferenceBackendConfig | None = Field(
        default_factory=lambda: ReferenceBackendConfig(name="torch"),
        description="the model as served today, every model is also timed against the teacher on it (default: "
                    "PyTorch fp32 on each cell's device and threads; null: no such timing)",
    )
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    seed: Seed = 0
    cache_dir: str | None = Field(None, description="where built artifacts are kept (default ~/.cache/compbench)")

    @field_validator(*_UNIQUE_ENTRIES)
    @classmethod
    def _no_duplicates(cls, entries: list, info: ValidationInfo) -> list:
        what, identity, inner = _UNIQUE_ENTRIES[info.field_name]
        first_index: dict = {}
        for index, entry in enumerate(entries):
            first = first_index.setdefault(identity(entry), index)
            if first != index:
                raise FieldError(
                    (index, *inner), f"duplicate {what} {identity(entry)!r}: {info.field_name}[{first}] has it already"
                )
        return entries

    @model_validator(mode="after")
    def _mapped_labels_need_a_given_teacher(self) -> "Suite":
        for index, entry in enumerate(self.tasks):
            if self.teacher.finetune and isinstance(entry, FileTaskConfig) and isinstance(entry.labels, dict):
                raise FieldError(("tasks", index, "labels"), "a mapping reads your labels as a given model's (teacher: "
                                 "{finetune: false}); for a head fine-tuned here list them: labels: "
                                 f"{labels_yaml([str(key) for key in entry.labels])}")
        return self

    @model_validator(mode="after")
    def _long_prompts_for_causal_lms(self) -> "Suite":
        """Lengths beyond a classifier's 512 positions are a causal LM's prompts only."""
        longest = max(self.measure.fixed_seq_lens, default=0)
        for index, entry in enumerate(self.tasks):
            if longest > MAX_SEQ_LEN and not isinstance(entry, LanguageModelingConfig):
                raise FieldError(("measure", "seq_lens", self.measure.seq_lens.index(longest)),
                                 f"{longest} tokens: a classification task's rows are timed at {MIN_SEQ_LEN}.."
                                 f"{MAX_SEQ_LEN} tokens (tasks[{index}], {getattr(entry, 'name', entry)}); longer "
                                 "lengths are causal LMs' prompts")
        return self

    @model_validator(mode="after")
    def _natural_lengths_for_classifiers(self) -> "Suite":
        if NATURAL not in self.measure.seq_lens:
            return self
        for index, entry in enumerate(self.tasks):
            if isinstance(entry, LanguageModelingConfig):
                raise FieldError(("measure", "seq_lens", self.measure.seq_lens.index(NATURAL)),
                                 f"'{NATURAL}' times batches of a classification task's rows at their own lengths; "
                                 f"tasks[{index}] ({entry.name}) is a causal LM, timed at fixed prompt lengths: give "
                                 "numbers, or run it in a suite of its own")
        return self

    @model_validator(mode="after")
    def _add_baseline(self) -> "Suite":
        if not any(p.name == BASELINE for p in self.pipelines):
            self.pipelines.insert(0, PipelineConfig(name=BASELINE))
        return self

    # Set by load_suite: the folder relative paths in the suite are resolved against.
    _base_dir: Path = Path(".")

    @property
    def task_names(self) -> list[str]:
        return [entry if isinstance(entry, str) else entry.name for entry in self.tasks]

    def task_entry(self, name: str) -> str | FileTaskConfig | LanguageModelingConfig:
        """The suite's entry for task ``name``: a GLUE name, the mapping of a task from files, or of a causal-LM
        task."""
        return next(entry for entry in self.tasks if (entry if isinstance(entry, str) else entry.name) == name)

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self._base_dir / path).resolve()


def _validated_params(model: type[BaseModel], params: dict) -> tuple[dict, list[dict]]:
    """``params`` checked against a compressor's Params model: (validated values, pydantic-style errors)."""
    errors = []
    if (
        model.model_config.get("extra", "ignore") == "ignore"
    ):  # pydantic's default: a misspelt key would vanish silently
        known = {key for name, field in model.model_fields.items() for key in (name, field.alias) if key}
        errors = [
            {"type": "extra_forbidden", "loc": (key,), "input": value}
            for key, value in params.items()
            if key not in known
        ]
    try:
        return model.model_validate(params).model_dump(), errors
    except ValidationError as exc:
        return params, errors + exc.errors()
