"""The suite's ``measure:`` section: the shapes timed and how long, and how accuracy is scored."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

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
    min_seconds: float = Field(2.0, ge=0, description="... and at least this long (seconds a shape is timed)")
    target_precision: float = Field(0.02, gt=0, lt=1, description="then on until the 95% interval of the median "
                                    "(of the speed-up, when compared with the teacher) is within +- this share ...")
    max_seconds: float = Field(10.0, gt=0, description="... or this many seconds have passed")
    max_iters: int = Field(10_000, ge=1, description="... or this many calls")
    eval_batch_size: int = Field(64, ge=1)
    bootstrap_resamples: int = Field(1000, ge=100)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "MeasureConfig":
        if self.max_iters < self.min_iters:
            raise ValueError(f"max_iters ({self.max_iters}) is below min_iters ({self.min_iters}); "
                             "give max_iters >= min_iters")
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds:g}) is below min_seconds ({self.min_seconds:g}); "
                             "give max_seconds >= min_seconds")
        return self
