"""Recovery fine-tuning after a lossy compression (pruning, SVD): the shared training loop with
the shared distillation loss, the uncompressed input model as the teacher (``alpha > 0``) or
the labels alone (``alpha: 0``, the default).

A causal LM (``language_modeling`` task) recovers on its training text cut into ``max_seq_len``-token rows
with the next-token cross-entropy, mixed (``alpha > 0``) with token-level distillation from the uncompressed
model, which runs on each batch; its score before and after is the perplexity (lower is better)."""

from __future__ import annotations

import torch
from pydantic import Field

from compbench.compressors.base import CompressContext
from compbench.config.training import TrainConfig
from compbench.models.artifact import ModelArtifact
from compbench.training.evaluation import validation_evaluator
from compbench.training.kd import TeacherSignal
from compbench.training.teachers import EpochSelection, train_against_teachers


class RecoveryParams(TeacherSignal, EpochSelection):
    alpha: float = Field(
        0.0, ge=0, le=1, description="weight of distillation from the uncompressed model; 0 = labels only"
    )
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1, learning_rate=5e-5))


def score_and_recover(model: torch.nn.Module, tokenizer, source: ModelArtifact, recovery: RecoveryParams | None,
                      ctx: CompressContext, description: str) -> dict:
    """The validation metric of the compressed ``model`` as it is, then (if ``recovery``)
    fine-tune it in place; returns what to record in the lineage."""
    evaluate, split = validation_evaluator(ctx.data, tokenizer, ctx.max_seq_len)
    record = {"score_before_recovery": evaluate(model), "eval_split": split}
    ctx.reporter.log(
        f"  {ctx.data.task.name} {description}: {split} score before recovery {record['score_before_recovery']:.4f}"
    )
    if recovery is not None:
        summary = train_against_teachers(model, tokenizer, [source], recovery, recovery.train, ctx,
                                         selection=recovery, description=f"{description} recovery")
        record["recovery"] = summary
    return record
