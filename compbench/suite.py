"""Suite files: schema (pydantic), safe loading, pointed errors, expansion to cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compbench.backends import BACKENDS, PROFILES, BackendOptions
from compbench.compressors import COMPRESSORS
from compbench.errors import UsageError
from compbench.measure import MeasureConfig
from compbench.registry import unknown_name_message
from compbench.tasks import get_task
from compbench.training import TrainConfig

BASELINE = "baseline"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    dir: str | None = Field(None, description="local GLUE folder (parquet or TSV layout, relative to the suite file) or 'hub'")
    limit_train: int | None = Field(None, ge=1, description="seeded subset of the training rows")
    limit_eval: int | None = Field(None, ge=1, description="seeded subset of the evaluation rows")
    seed: int = 0


class StepConfig(Strict):
    compressor: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("compressor")
    @classmethod
    def _known_compressor(cls, name: str) -> str:
        if name not in COMPRESSORS:
            raise ValueError(unknown_name_message("compressor", name, COMPRESSORS.names()))
        return name


class PipelineConfig(Strict):
    name: str = Field(min_length=1)
    steps: list[StepConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _baseline_is_uncompressed(self) -> "PipelineConfig":
        if self.name == BASELINE and self.steps:
            raise ValueError(f"the pipeline name {BASELINE!r} is reserved for the uncompressed teacher; rename it or drop its steps")
        return self


class BackendConfig(BackendOptions):
    @field_validator("name")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in BACKENDS:
            raise ValueError(unknown_name_message("backend", name, BACKENDS.names()))
        return name

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        if profile not in PROFILES:
            raise ValueError(unknown_name_message("profile", profile, sorted(PROFILES)))
        return profile


class Suite(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    model: str = Field("minilm-l6", description="base model: packaged alias, local folder or hub id")
    tasks: list[str] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TrainConfig = Field(default_factory=TrainConfig)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    backends: list[BackendConfig] = Field(default_factory=lambda: [BackendConfig(name="torch")], min_length=1)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    seed: int = 0
    cache_dir: str | None = Field(None, description="where built artifacts are kept (default ~/.cache/compbench)")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        for name in tasks:
            get_task(name)
        _reject_duplicates("task", tasks)
        return tasks

    @model_validator(mode="after")
    def _unique_names(self) -> "Suite":
        if not any(p.name == BASELINE for p in self.pipelines):
            self.pipelines.insert(0, PipelineConfig(name=BASELINE))
        _reject_duplicates("pipeline name", [p.name for p in self.pipelines])
        _reject_duplicates("backend (name, device, profile, precision, threads)", [b.label for b in self.backends])
        return self

    # Set by load_suite: the folder relative paths in the suite are resolved against.
    _base_dir: Path = Path(".")

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self._base_dir / path).resolve()


def _reject_duplicates(what: str, values: list[str]) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


@dataclass(frozen=True)
class Cell:
    """One (task, pipeline, backend) combination: it yields one row per shape."""

    task: str
    pipeline: PipelineConfig
    backend: BackendConfig

    @property
    def cell_id(self) -> str:
        return f"{self.task}/{self.pipeline.name}/{self.backend.label}"


def expand(suite: Suite) -> list[Cell]:
    return [Cell(t, p, b) for t in suite.tasks for p in suite.pipelines for b in suite.backends]


# ---------------------------------------------------------------- loading and errors

def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"suite file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a suite must be a mapping with keys such as name, tasks, pipelines, backends")
    suite = validate_suite(raw, str(path))
    suite._base_dir = path.resolve().parent
    return suite


def validate_suite(raw: dict, source: str) -> Suite:
    try:
        suite = Suite.model_validate(raw)
        for index, pipeline in enumerate(suite.pipelines):
            for step_index, step in enumerate(pipeline.steps):
                step.params = _validated_params(step, ("pipelines", index, "steps", step_index, "params"))
    except ValidationError as exc:
        raise UsageError("\n".join(format_error(source, error) for error in exc.errors())) from None
    except _ParamsError as exc:
        raise UsageError("\n".join(format_error(source, error, exc.prefix) for error in exc.errors)) from None
    return suite


class _ParamsError(Exception):
    def __init__(self, prefix: tuple, errors: list[dict]) -> None:
        self.prefix, self.errors = prefix, errors


def _validated_params(step: StepConfig, location: tuple) -> dict:
    params_model = COMPRESSORS.get(step.compressor).Params
    try:
        return params_model.model_validate(step.params).model_dump()
    except ValidationError as exc:
        raise _ParamsError(location, [dict(e, model=params_model) for e in exc.errors()]) from None


def format_error(source: str, error: dict, prefix: tuple = ()) -> str:
    """``suites/x.yaml: teacher.batchsize: unknown field; valid: ... (did you mean 'batch_size'?)``"""
    location = [*prefix, *error["loc"]]
    where = field_path(location)
    if error["type"] == "extra_forbidden":
        model = error.get("model") or _model_at(Suite, location[:-1])
        valid = sorted(model.model_fields) if model else []
        message = unknown_name_message("field", str(location[-1]), valid)
    elif error["type"] == "value_error":
        message = str(error["ctx"]["error"])
    else:
        message = f"{error['msg']} (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else error["msg"]
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def field_path(location: list) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(model: type[BaseModel], location: list) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``location`` (for listing valid keys)."""
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return None
        model = inner[0]
    return model

