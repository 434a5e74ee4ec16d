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

    def teacher_with_seed(self, seed: int) -> ModelArtifact:
        if self.retrain_teacher is None:
            raise UnsupportedError("further teachers need the suite's teacher recipe, which this build was not given")
        return self.retrain_teacher(seed)


class Compressor(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    # Bump when the compressor's output changes for the same inputs: it is part of the cache key.
    code_version: ClassVar[str] = "1"
    # Stored precisions of input models it can work from; others give an UnsupportedError (skipped cells).
    input_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def check_input(self, model: ModelArtifact) -> None:
        if model.precision not in self.input_precisions:
            raise UnsupportedError(f"{self.name} takes {' or '.join(self.input_precisions)} models; "
                                   f"this one is already {model.precision}")

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    @classmethod
    def key_material(cls, params: BaseModel, resolve_model: Callable[[str], ResolvedModel]) -> dict:
        """What else the output depends on that ``params`` only names (e.g. the content of a model folder a
        parameter points to): it goes into the step's cache key. Default: nothing."""
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

