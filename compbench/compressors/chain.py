"""Applying a pipeline's compressor steps to the teacher, each step cached by content hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compbench.cache.store import ArtifactStore
from compbench.common.envinfo import package_versions
from compbench.common.hashing import stable_hash
from compbench.common.plugins import COMPRESSORS
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import ModelArtifact
from compbench.models.references import ResolvedModel, resolve_model
from compbench.tasks.data import TaskData

# The libraries whose versions a built model can depend on: a new one builds again (design.md: a key
# covers everything the output depends on).
BUILD_LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnxruntime-gpu", "onnx",
                   "onnxscript", "bitsandbytes", "safetensors", "numpy")


@dataclass(frozen=True)
class StepInputs:
    """What every step's output depends on besides its input model and parameters."""

    data_fingerprint: str        # the task's rows
    seed: int                    # the suite's: importance rows, calibration rows, students' initialisation
    base_dir: Path               # where the suite's relative model references (a student's ``model``) resolve

    def resolve_model(self, reference: str) -> ResolvedModel:
        return resolve_model(reference, self.base_dir)


def step_identity(input_hash: str, step: StepConfig, inputs: StepInputs) -> tuple[str, dict]:
    """(cache key of the artifact ``step`` makes from ``input_hash``, its validated parameters)."""
    compressor_cls = COMPRESSORS.get(step.compressor)
    params = compressor_cls.Params.model_validate(step.params)
    key = stable_hash({"input": input_hash, "compressor": step.compressor, "params": params.model_dump(),
                       "code_version": compressor_cls.code_version, "data": inputs.data_fingerprint,
                       "seed": inputs.seed, "libraries": package_versions(BUILD_LIBRARIES),
                       "references": compressor_cls.key_material(params, inputs.resolve_model, inputs.base_dir)})
    return key, params.model_dump()


def planned_hash(teacher_hash: str, pipeline: PipelineConfig, inputs: StepInputs) -> str:
    """The hash the artifact at the end of ``pipeline`` will have, known before anything is built."""
    artifact_hash = teacher_hash
    for step in pipeline.steps:
        artifact_hash, _ = step_identity(artifact_hash, step, inputs)
    return artifact_hash


@dataclass
class PipelineBuild:
    """What every step of one (task, pipeline) shares."""

    teacher: ModelArtifact
    data: TaskData
    store: ArtifactStore
    seed: int
    device: str
    reporter: Reporter
    max_seq_len: int = 128
    retrain_teacher: Callable[[int], ModelArtifact] | None = None   # the teacher recipe with another seed
    base_dir: Path = Path(".")        # the suite's folder

    @property
    def inputs(self) -> StepInputs:
        return StepInputs(self.data.fingerprint, self.seed, self.base_dir)

    def run(self, pipeline: PipelineConfig) -> ModelArtifact:
        """The artifact at the end of ``pipeline`` (the teacher itself for the baseline)."""
        artifact = self.teacher
        for step in pipeline.steps:
            artifact = self.apply(artifact, step, label=f"{self.data.task.name}/{pipeline.name}")
        return artifact

    def apply(self, source: ModelArtifact, step: StepConfig, label: str) -> ModelArtifact:
        compressor_cls = COMPRESSORS.get(step.compressor)
        key, params_dump = step_identity(source.hash, step, self.inputs)
        params = compressor_cls.Params.model_validate(params_dump)
        record = {"step": step.compressor, "params": params_dump, "input_hash": source.hash}

        def write(folder) -> ModelArtifact:
            self.reporter.log(f"{label}: {step.compressor} {params.model_dump(exclude_defaults=True)}")
            ctx = CompressContext(data=self.data, teacher=self.teacher, seed=self.inputs.seed, device=self.device,
                                  work_dir=folder, reporter=self.reporter, max_seq_len=self.max_seq_len,
                                  retrain_teacher=self.retrain_teacher, resolve_model=self.inputs.resolve_model,
                                  base_dir=self.base_dir)
            compressor = compressor_cls(params)
            compressor.check_input(source)
            result = compressor.compress(source, ctx)
            details = {key: value for entry in result.lineage for key, value in entry.items()}   # e.g. training history
            result.lineage = [*source.lineage, {**record, **details}]
            return result

        return self.store.build(key, write)
