"""Applying a pipeline's compressor steps to the teacher, each step cached by content hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from compbench.cache.store import ArtifactStore
from compbench.common.hashing import stable_hash
from compbench.common.plugins import COMPRESSORS
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import ModelArtifact
from compbench.tasks.data import TaskData


def step_key(input_hash: str, compressor: str, params: dict, code_version: str, data_fingerprint: str) -> str:
    return stable_hash({"input": input_hash, "compressor": compressor, "params": params,
                        "code_version": code_version, "data": data_fingerprint})


def step_identity(input_hash: str, step: StepConfig, data_fingerprint: str) -> tuple[str, dict]:
    """(cache key of the artifact ``step`` makes from ``input_hash``, its validated parameters)."""
    compressor_cls = COMPRESSORS.get(step.compressor)
    params = compressor_cls.Params.model_validate(step.params).model_dump()
    return step_key(input_hash, step.compressor, params, compressor_cls.code_version, data_fingerprint), params


def planned_hash(teacher_hash: str, pipeline: PipelineConfig, data_fingerprint: str) -> str:
    """The hash the artifact at the end of ``pipeline`` will have, known before anything is built."""
    artifact_hash = teacher_hash
    for step in pipeline.steps:
        artifact_hash, _ = step_identity(artifact_hash, step, data_fingerprint)
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

    def run(self, pipeline: PipelineConfig) -> ModelArtifact:
        """The artifact at the end of ``pipeline`` (the teacher itself for the baseline)."""
        artifact = self.teacher
        for step in pipeline.steps:
            artifact = self.apply(artifact, step, label=f"{self.data.task.name}/{pipeline.name}")
        return artifact

    def apply(self, source: ModelArtifact, step: StepConfig, label: str) -> ModelArtifact:
        compressor_cls = COMPRESSORS.get(step.compressor)
        key, params_dump = step_identity(source.hash, step, self.data.fingerprint)
        params = compressor_cls.Params.model_validate(params_dump)
        record = {"step": step.compressor, "params": params_dump, "input_hash": source.hash}

        def write(folder) -> ModelArtifact:
            self.reporter.log(f"{label}: {step.compressor} {params.model_dump(exclude_defaults=True)}")
            ctx = CompressContext(data=self.data, teacher=self.teacher, seed=self.seed, device=self.device,
                                  work_dir=folder, reporter=self.reporter, max_seq_len=self.max_seq_len,
                                  retrain_teacher=self.retrain_teacher)
            compressor = compressor_cls(params)
            compressor.check_input(source)
            result = compressor.compress(source, ctx)
            details = {key: value for entry in result.lineage for key, value in entry.items()}   # e.g. training history
            result.lineage = [*source.lineage, {**record, **details}]
            return result

        return self.store.build(key, write)
