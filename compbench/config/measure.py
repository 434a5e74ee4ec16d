"""The suite's ``measure:`` section: the shapes timed and how long, and how accuracy is scored."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, model_validator

from compbench.common.fields import show_value
from compbench.config import limits
from compbench.config.error_lines import FieldError
from compbench.config.limits import (
    MAX_BATCH_SIZE,
    MAX_ITERS,
    MAX_PROMPT_LEN,
    MAX_RESAMPLES,
    MAX_SEQ_LEN,
    MAX_TIMING_SECONDS,
    MIN_SEQ_LEN,
    BatchSize,
    PromptLen,
    bootstrap_bytes,
    bounded_int,
    input_bytes,
    show_bytes,
)

NATURAL = "natural"     # a shape's length: each batch of real rows padded to its longest, as a service pads it
NATURAL_BATCHES = 64    # seeded batches a natural shape cycles through (one a timed round, the same for every model)
Shape = tuple[int, Union[int, str]]     # (batch size, tokens per row or NATURAL)


def _length(value: Any) -> int | str:
    """A ``seq_lens`` entry: ``natural``, or a whole number of tokens in range (one line naming both otherwise)."""
    if value == NATURAL:
        return NATURAL
    try:
        return TypeAdapter(PromptLen).validate_python(value)
    except ValidationError:
        raise ValueError(f"must be a whole number of tokens {MIN_SEQ_LEN}..{MAX_PROMPT_LEN} (a classifier's: "
                         f"..{MAX_SEQ_LEN}) or '{NATURAL}'; "
                         f"got {show_value(value)}") from None


SeqLenOrNatural = Annotated[Union[int, str], PlainValidator(_length)]


def shape_order(shape: Shape) -> tuple:
    """A sort key of shapes: by batch size, fixed lengths in order, the natural length after them."""
    batch, seq = shape
    return (batch, 1, 0) if seq == NATURAL else (batch, 0, seq)


class GenerationConfig(BaseModel):
    """How a causal LM's decoding is timed at each shape (batch size x prompt tokens): greedy, every call made
    to produce exactly ``new_tokens`` (``min_new_tokens = max_new_tokens``), so every call does the same work."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    new_tokens: bounded_int(2, 4096) = Field(32, description="tokens each timed generate() call produces")
    min_calls: bounded_int(1, MAX_ITERS) = Field(5, description="timed calls of each kind: at least this many ...")
    min_seconds: float = Field(2.0, ge=0, le=MAX_TIMING_SECONDS, description="... and at least this long ...")
    max_seconds: float = Field(30.0, gt=0, le=MAX_TIMING_SECONDS, description="... then on to the precision "
                                                                              "target, at most this long")


class MeasureConfig(BaseModel):
    """The suite's ``measure:`` section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    batch_sizes: list[BatchSize] = Field(
        default_factory=lambda: [1, 32], min_length=1, description=f"rows per timed call, 1..{MAX_BATCH_SIZE}"
    )
    seq_lens: list[SeqLenOrNatural] = Field(
        default_factory=lambda: [128], min_length=1,
        description=f"padded tokens per row, {MIN_SEQ_LEN}..{MAX_SEQ_LEN}, or '{NATURAL}' (each batch of real rows "
                    "padded to its longest row, truncated at teacher.max_seq_len; classification tasks)")
    warmup_iters: bounded_int(0, MAX_ITERS) = Field(5, description="untimed calls before timing")
    min_iters: bounded_int(1, MAX_ITERS) = Field(20, description="timed calls: at least this many ...")
    min_seconds: float = Field(2.0, ge=0, le=MAX_TIMING_SECONDS,
                               description="... and at least this long (seconds a shape is timed)")
    target_precision: float = Field(0.02, gt=0, lt=1, description="then on until the 95% interval of the median "
                                    "(of the speed-up, when compared with the teacher) is within +- this share ...")
    max_seconds: float = Field(10.0, gt=0, le=MAX_TIMING_SECONDS, description="... or this many seconds have passed")
    max_iters: bounded_int(1, MAX_ITERS) = Field(10_000, description="... or this many calls")
    eval_batch_size: BatchSize = Field(64, description="rows per call when scoring accuracy")
    bootstrap_resamples: bounded_int(100, MAX_RESAMPLES) = Field(1000)
    generation: GenerationConfig = Field(default_factory=GenerationConfig,
                                         description="causal LMs: how decoding is timed")

    @property
    def fixed_seq_lens(self) -> list[int]:
        """The fixed lengths among ``seq_lens`` (the natural one left out)."""
        return [seq for seq in self.seq_lens if seq != NATURAL]

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "MeasureConfig":
        if self.max_iters < self.min_iters:
            raise ValueError(f"max_iters ({self.max_iters}) is below min_iters ({self.min_iters}); "
                             "give max_iters >= min_iters")
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds:g}) is below min_seconds ({self.min_seconds:g}); "
                             "give max_seconds >= min_seconds")
        return self

    @model_validator(mode="after")
    def _fits_in_memory(self) -> "MeasureConfig":
        """What can be known without the model: the largest shape's input tensors, and the bootstrap over the
        most timed calls, each alone within this machine's memory (the model's activations come on top)."""
        memory = limits.machine_memory_bytes()
        if not memory:
            return self
        batch, seq = max(self.batch_sizes), max(self.fixed_seq_lens, default=MIN_SEQ_LEN)
        need = input_bytes(batch, seq)
        if need > memory:
            raise FieldError(("batch_sizes",), f"batch {batch} x {seq} tokens needs {show_bytes(need)} for its input "
                             f"tensors alone, more than this machine's {show_bytes(memory)} of memory; "
                             "give smaller batch_sizes or seq_lens")
        need = bootstrap_bytes(self.bootstrap_resamples, self.max_iters)
        if need > memory:
            raise FieldError(("bootstrap_resamples",), f"{self.bootstrap_resamples} resamples of up to max_iters "
                             f"{self.max_iters} timed calls need {show_bytes(need)}, more than this machine's "
                             f"{show_bytes(memory)} of memory; give fewer bootstrap_resamples or a lower max_iters")
        return self
