"""The suite's ``measure:`` section: the shapes timed and how long, and how accuracy is scored."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

SeqLen = Annotated[int, Field(ge=8, le=512)]


class MeasureConfig(BaseModel):
    """The suite's ``measure:`` section."""

    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 32], min_length=1)
    seq_lens: list[SeqLen] = Field(
        default_factory=lambda: [128], min_length=1, description="padded tokens per row, 8..512"
    )
    warmup_iters: int = Field(5, ge=0, description="untimed calls before timing")
    min_iters: int = Field(20, ge=1, description="timed calls: at least this many ...")
    min_seconds: float = Field(2.0, ge=0, description="... and at least this long")
    max_iters: int = Field(10_000, ge=1, description="stop timing after this many calls")
    eval_batch_size: int = Field(64, ge=1)
    bootstrap_resamples: int = Field(1000, ge=100)
