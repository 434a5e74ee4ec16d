"""Compressor chains: steps applied in order, lineage recorded, each step cached by content hash."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from pydantic import BaseModel, Field

from compbench.cache.store import ArtifactStore
from compbench.common.plugins import COMPRESSORS
from compbench.common.progress import Reporter
from compbench.compressors.base import Compressor
from compbench.compressors.chain import PipelineBuild
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import save_hf_artifact
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource


class ScaleParams(BaseModel):
    factor: float = Field(gt=0)


class ScaleClassifier(Compressor):
    """Test compressor: multiplies the classifier weights (a visible, checkable change)."""

    name = "scale-classifier"
    Params = ScaleParams
    calls: ClassVar[int] = 0

    def compress(self, model, ctx):
        type(self).calls += 1
        module = model.torch_model()
        with torch.no_grad():
            module.classifier.weight.mul_(self.params.factor)
        return save_hf_artifact(ctx.work_dir, module, model.tokenizer(), task=model.task, lineage=[])


@pytest.fixture
def builder(tiny_artifact, glue_data, tmp_path, monkeypatch):
    monkeypatch.setitem(COMPRESSORS._classes, ScaleClassifier.name, ScaleClassifier)
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=16)
    return PipelineBuild(tiny_artifact, data, ArtifactStore(tmp_path), seed=0, device="cpu",
                         reporter=Reporter(enabled=False))


def test_steps_chain_in_order_with_lineage_and_cache(builder, tiny_artifact):
    pipeline = PipelineConfig(name="twice", steps=[StepConfig(compressor="scale-classifier", params={"factor": 0.5}),
                                                   StepConfig(compressor="scale-classifier", params={"factor": 3.0})])
    ScaleClassifier.calls = 0
    result = builder.run(pipeline)
    original = tiny_artifact.torch_model().classifier.weight
    torch.testing.assert_close(result.torch_model().classifier.weight, original * 1.5)
    assert [r["params"] for r in result.lineage[-2:]] == [{"factor": 0.5}, {"factor": 3.0}]
    assert result.lineage[-2]["input_hash"] == tiny_artifact.hash
    assert ScaleClassifier.calls == 2
    again = builder.run(pipeline)
    assert ScaleClassifier.calls == 2 and again.hash == result.hash
    other = builder.run(PipelineConfig(name="once", steps=pipeline.steps[:1]))
    assert ScaleClassifier.calls == 2 and other.hash == result.lineage[-1]["input_hash"]


def test_baseline_is_the_teacher_itself(builder, tiny_artifact):
    assert builder.run(PipelineConfig(name="baseline")).path == tiny_artifact.path
