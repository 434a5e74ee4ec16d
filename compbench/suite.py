"""Suite files: schema (pydantic), safe loading, pointed errors, expansion to cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from compbench.backends import BACKENDS, PROFILES, BackendOptions
from compbench.backends.base import DEVICES
from compbench.compressors import COMPRESSORS
from compbench.errors import UsageError
from compbench.measure import MeasureConfig
from compbench.registry import closest_name, unknown_name_message
from compbench.tasks import get_task, task_names
from compbench.training import TrainConfig

BASELINE = "baseline"


class FieldError(ValueError):
    """A validator's complaint about a field *below* the one it validates; ``loc`` is relative to it."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


class ParamsError(ValueError):
    """A plugin's settings (a compressor's ``params``, a backend's ``options``) failed their model:
    pydantic's errors, relative to that field."""

    def __init__(self, model: type[BaseModel], errors: list[dict], field: str = "params") -> None:
        super().__init__(f"invalid {field} for {model.__name__}")
        self.model, self.errors, self.field = model, errors, field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_task(name: str) -> str:
    try:
        get_task(name)
    except UsageError as exc:   # pydantic reports only ValueError/AssertionError with the field's location
        raise ValueError(str(exc)) from None
    return name


TaskName = Annotated[str, AfterValidator(_known_task)]


class DataConfig(Strict):
    dir: str | None = Field(None, description="local GLUE folder (parquet or TSV layout, relative to the suite file) or 'hub'")
    limit_train: int | None = Field(None, ge=1, description="seeded subset of the training rows")
    limit_eval: int | None = Field(None, ge=1, description="seeded subset of the evaluation rows")
    seed: int = 0


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
        "subprocess", description="each build and each cell in a fresh process (subprocess) or in the runner's own (inline)")
    cell_timeout: float | None = Field(3600.0, gt=0, description="seconds one cell's measurement may take (subprocess isolation)")
    build_timeout: float | None = Field(None, gt=0, description="seconds one pipeline's build may take, training included")


class PipelineConfig(Strict):
    name: str = Field(min_length=1, description="unique within the suite")
    steps: list[StepConfig] = Field(default_factory=list)
    backends: list[str] | None = Field(None, description="measure only on these backends: a name (torch), a name and "
                                                         "device (torch:cuda) or a backend's label (torch:cuda:default); "
                                                         "default: every backend")

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


# List fields whose entries must differ: field -> (what an entry is, its identity, where in the entry that lives).
_UNIQUE_ENTRIES = {
    "tasks": ("task", lambda task: task, ()),
    "pipelines": ("pipeline name", lambda pipeline: pipeline.name, ("name",)),
    "backends": ("backend", lambda backend: backend.label, ()),
}


class Suite(Strict):
    name: str = Field(min_length=1, description="names the run folders")
    description: str = ""
    model: str = Field("minilm-l6", description="base model: packaged alias, local folder or hub id")
    tasks: list[TaskName] = Field(min_length=1, description=f"GLUE tasks, from: {', '.join(task_names())}")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TrainConfig = Field(default_factory=TrainConfig)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    backends: list[BackendConfig] = Field(default_factory=lambda: [BackendConfig(name="torch")], min_length=1)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    seed: int = 0
    cache_dir: str | None = Field(None, description="where built artifacts are kept (default ~/.cache/compbench)")

    @field_validator(*_UNIQUE_ENTRIES)
    @classmethod
    def _no_duplicates(cls, entries: list, info: ValidationInfo) -> list:
        what, identity, inner = _UNIQUE_ENTRIES[info.field_name]
        first_index: dict = {}
        for index, entry in enumerate(entries):
            first = first_index.setdefault(identity(entry), index)
            if first != index:
                raise FieldError((index, *inner), f"duplicate {what} {identity(entry)!r}: {info.field_name}[{first}] has it already")
        return entries

    @model_validator(mode="after")
    def _add_baseline(self) -> "Suite":
        if not any(p.name == BASELINE for p in self.pipelines):
            self.pipelines.insert(0, PipelineConfig(name=BASELINE))
        return self

    # Set by load_suite: the folder relative paths in the suite are resolved against.
    _base_dir: Path = Path(".")

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self._base_dir / path).resolve()


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
    return [Cell(t, p, b) for t in suite.tasks for p in suite.pipelines for b in suite.backends if p.runs_on(b)]


# ---------------------------------------------------------------- loading and errors

class _SuiteLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        first_marks: dict = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                first = first_marks.setdefault(key_node.value, key_node.start_mark)
                if first is not key_node.start_mark:
                    raise yaml.MarkedYAMLError(problem=f"duplicate key {key_node.value!r} (first given at line {first.line + 1})",
                                               problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"suite file {path} {'is a folder' if path.is_dir() else 'does not exist'}; pass a YAML file such as suites/quick.yaml")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SuiteLoader)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a suite is a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else _show(raw)
        raise UsageError(f"{path}: a suite must be a mapping with keys such as name, tasks, pipelines, backends; got {got}")
    suite = validate_suite(raw, str(path))
    suite._base_dir = path.resolve().parent
    return suite


def validate_suite(raw: dict, source: str) -> Suite:
    """The suite in ``raw``; a UsageError with one line per mistake, each naming ``source`` and the field."""
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise UsageError("\n".join(error_lines(source, exc.errors()))) from None


def _validated_params(model: type[BaseModel], params: dict) -> tuple[dict, list[dict]]:
    """``params`` checked against a compressor's Params model: (validated values, pydantic-style errors)."""
    errors = []
    if model.model_config.get("extra", "ignore") == "ignore":   # pydantic's default: a misspelt key would vanish silently
        known = {key for name, field in model.model_fields.items() for key in (name, field.alias) if key}
        errors = [{"type": "extra_forbidden", "loc": (key,), "input": value} for key, value in params.items() if key not in known]
    try:
        return model.model_validate(params).model_dump(), errors
    except ValidationError as exc:
        return params, errors + exc.errors()


def error_lines(source: str, errors: list[dict], prefix: tuple = (), model: type[BaseModel] = Suite) -> list[str]:
    """One line per mistake in pydantic's ``errors`` for ``model`` (which sits at ``prefix`` in the file)."""
    misspelt = _misspelt_fields(errors, model)
    lines = []
    for error in errors:
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, ParamsError):
            lines += error_lines(source, nested.errors, (*prefix, *error["loc"], nested.field), nested.model)
        elif not (error["type"] == "missing" and tuple(error["loc"]) in misspelt):   # said by the unknown key's line
            lines.append(format_error(source, error, prefix, model))
    return lines


def _misspelt_fields(errors: list[dict], model: type[BaseModel]) -> set[tuple]:
    """Locations of fields that an unknown key beside them looks like a misspelling of."""
    found = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            holder = _model_at(model, list(error["loc"][:-1]))
            close = closest_name(str(error["loc"][-1]), list(holder.model_fields)) if holder else None
            if close:
                found.add((*error["loc"][:-1], close))
    return found


def format_error(source: str, error: dict, prefix: tuple = (), model: type[BaseModel] = Suite) -> str:
    """One line: ``suites/x.yaml: teacher.batchsize: unknown field 'batchsize'; valid: ... (did you mean 'batch_size'?)``."""
    location = list(error["loc"])
    kind = error["type"]
    if kind == "value_error":
        problem = error["ctx"]["error"]
        location += getattr(problem, "loc", ())
        message = str(problem)
    elif kind == "extra_forbidden":
        holder = _model_at(model, location[:-1])
        message = unknown_name_message("field", str(location[-1]), sorted(holder.model_fields) if holder else [])
    else:
        message = _describe(error, model, location)
    where = field_path([*prefix, *location])
    line = f"{where}: {message}" if where else message
    return f"{source}: {line}".replace("\n", " ")


# What a value must be, by pydantic error type (the rest use pydantic's own wording).
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _describe(error: dict, model: type[BaseModel], location: list) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    field = _field_at(model, location)
    about = f" ({field.description})" if field is not None and field.description else ""
    if kind == "missing":
        return f"missing required field{about}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"must not be empty{about}"
    if kind in _EXPECTED:
        expected = f"must be {_EXPECTED[kind]}"
        holder = _model_at(model, location)
        if expected.endswith("mapping") and holder is not None:
            expected += f" with keys from: {', '.join(sorted(holder.model_fields))}"
    else:
        expected = error["msg"].replace("Input should be", "must be")
    return f"{expected}; got {_show(error.get('input'))}"


def _show(value: Any) -> str:
    """A value as the suite's author wrote it (YAML words), kept short."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field_path(location: list) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _field_at(model: type[BaseModel], location: list):
    """The pydantic FieldInfo of the field at ``location`` below ``model`` (list indexes ignored), or None."""
    names = [part for part in location if isinstance(part, str)]
    holder = _model_at(model, names[:-1]) if names else None
    return holder.model_fields.get(names[-1]) if holder is not None else None


def _model_at(model: type[BaseModel], location: list) -> type[BaseModel] | None:
    """The pydantic model of the value at ``location`` below ``model`` (for listing valid keys), or None."""
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
