"""Applying a pipeline's compressor steps to the teacher, each step cached by content hash."""

from __future__ import annotations

from compbench.artifact import ArtifactStore, ModelArtifact
from compbench.compressors import COMPRESSORS, CompressContext
from compbench.hashing import stable_hash
from compbench.progress import Reporter
from compbench.suite import PipelineConfig
from compbench.tasks import TaskData


def step_key(input_hash: str, compressor: str, params: dict, code_version: str, data_fingerprint: str) -> str:
    return stable_hash({"input": input_hash, "compressor": compressor, "params": params,
                        "code_version": code_version, "data": data_fingerprint})


def build_pipeline(
    teacher: ModelArtifact, pipeline: PipelineConfig, data: TaskData, store: ArtifactStore,
    *, seed: int, device: str, reporter: Reporter,
) -> ModelArtifact:
    """The artifact at the end of ``pipeline`` (the teacher itself for the baseline)."""
    artifact = teacher
    for step in pipeline.steps:
        compressor_cls = COMPRESSORS.get(step.compressor)
        params = compressor_cls.Params.model_validate(step.params)
        key = step_key(artifact.hash, step.compressor, params.model_dump(), compressor_cls.code_version, data.fingerprint)
        source = artifact

        def write(folder, source=source, compressor=compressor_cls(params), step=step):
            reporter.log(f"{data.task.name}/{pipeline.name}: {step.compressor} {params.model_dump()}")
            ctx = CompressContext(data=data, teacher=teacher, seed=seed, device=device, work_dir=folder, reporter=reporter)
            result = compressor.compress(source, ctx)
            result.lineage = [*source.lineage, {"step": step.compressor, "params": params.model_dump(), "input_hash": source.hash}]
            return result

        artifact = store.build(key, write)
    return artifact
