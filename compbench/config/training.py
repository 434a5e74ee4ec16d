"""A training budget and its optimiser settings: the suite's ``teacher:`` section, and compressors' ``train:``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Budget and optimiser settings (the suite's ``teacher:`` section, and compressors')."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1, description="passes over the training rows")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_seq_len: int = Field(128, ge=8, le=512, description="tokens kept per training/eval row")
    seed: int = 42
