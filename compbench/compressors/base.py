"""The compressor interface: take a ``ModelArtifact``, return a new one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from compbench.common.errors import UnsupportedError
from compbench.common.progress import Reporter
from compbench.models.artifact import ModelArtifact
from compbench.models.references import ResolvedModel, resolve_model
from compbench.tasks.data import TaskData


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class CompressContext:
    """What a compressor may use besides its input model."""

    data: TaskData
    teacher: ModelArtifact      # the fine-tuned, uncompressed task model
    seed: int
    device: str
    work_dir: Path              # the new artifact's folder: write the model here
    reporter: Reporter
    max_seq_len: int = 128      # tokens per row, as the teacher was trained
    # The task teacher fine-tuned as the suite says but with another seed (cached); for multi-teacher.
    retrain_teacher: Callable[[int], ModelArtifact] | None = None
    # A model reference (alias, folder relative to the suite's, hub id) as the suite means it.
    resolve_model: Callable[[str], ResolvedModel] = resolve_model
    base_dir: Path = Path(".")  # the suite's folder: relative file parameters start there

    def teacher_with_seed(self, seed: int) -> ModelArtifact:
        if self.retrain_teacher is None:
            raise UnsupportedError("further teachers need the suite's teacher recipe, which this build was not given")
        return self.retrain_teacher(seed)


@dataclass(frozen=True)
class Stored:
    """How a model is stored: its on-disk format (``models.formats``) and the precision of its weights."""

    format: str
    precision: str

    def __str__(self) -> str:
        return f"{self.format} ({self.precision})"


TEACHER = Stored("hf", "fp32")      # what every pipeline starts from: the fine-tuned teacher


class Compressor(ABC):
    """Takes a model stored one of the ways it declares (``accepts``) and writes a new one (``produces``);
    the suite's pipelines are checked against both before anything is built."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    # Bump when the compressor's output changes for the same inputs: it is part of the cache key.
    code_version: ClassVar[str] = "1"
    # The formats and precisions of input models it works from (a chain that feeds it others is refused),
    # and what it writes; compressors whose answer depends on their params override accepts / produces.
    input_formats: ClassVar[tuple[str, ...]] = ("hf",)
    input_precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    output: ClassVar[Stored] = TEACHER

    @classmethod
    def accepts(cls, params: BaseModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(formats, precisions) of the input models this step can take."""
        return cls.input_formats, cls.input_precisions

    @classmethod
    def produces(cls, params: BaseModel) -> Stored:
        """How the model this step writes is stored (what the next step receives)."""
        return cls.output

    @classmethod
    def refusal(cls, params: BaseModel, given: Stored | None) -> str | None:
        """Why this step cannot take a model stored as ``given`` (None: the teacher); None when it can."""
        given = given or TEACHER
        formats, precisions = cls.accepts(params)
        if given.format in formats and given.precision in precisions:
            return None
        method = getattr(params, "method", None)
        return (f"{cls.name}{f' (method {method})' if method else ''} takes models stored as "
                f"{' or '.join(formats)} at {' or '.join(precisions)}; it would be given {given}")

    def check_input(self, model: ModelArtifact) -> None:
        problem = self.refusal(self.params, Stored(model.format, model.precision))
        if problem:
            raise UnsupportedError(problem)

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @classmethod
    def key_material(cls, params: BaseModel, resolve_model: Callable[[str], ResolvedModel],
                     base_dir: Path = Path(".")) -> dict:
        """What else the output depends on that ``params`` only names (e.g. the content of a model folder or a
        file, relative to the suite's ``base_dir``, a parameter points to): it goes into the step's cache key.
        Default: nothing."""
        return {}

    @abstractmethod
    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        """Write the compressed model into ``ctx.work_dir`` and return its artifact.

        Raise ``UnsupportedError`` (with the reason) when it cannot run here.
        """


def check_method_params(params: BaseModel, reads: set[str]) -> None:
    """For compressors with a ``method``: setting a parameter the method does not read is a
    mistake, not a no-op."""
    changed = {name for name, field in type(params).model_fields.items() if getattr(params, name) != field.default}
    unused = sorted(changed - reads - {"method"})
    if unused:
        raise ValueError(f"method {params.method!r} does not use {', '.join(unused)}; it reads: "
                         f"{', '.join(sorted(reads)) or 'no other parameters'}")

