"""A training budget and its optimiser settings: the suite's ``teacher:`` section, and compressors' ``train:``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from compbench.common.fields import bounded_int
from compbench.config.limits import MAX_EPOCHS, MAX_STEPS, BatchSize, Seed, SeqLen


class TrainConfig(BaseModel):
    """Budget and optimiser settings (the suite's ``teacher:`` section, and compressors')."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: bounded_int(1, MAX_EPOCHS) = Field(3, description="passes over the training rows")
    max_steps: bounded_int(1, MAX_STEPS) | None = Field(None, description="stop after this many optimiser steps")
    batch_size: BatchSize = Field(32)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_seq_len: SeqLen = Field(128, description="tokens kept per training/eval row")
    seed: Seed = 42


class TeacherConfig(TrainConfig):
    """The suite's ``teacher:`` section: how the model becomes the task's teacher."""

    finetune: bool = Field(True, description="false: the model is already fine-tuned for the task and is used as it "
                                             "is (no training; its head and labels are checked against the task)")
