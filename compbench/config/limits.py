"""The largest sizes and counts a suite may ask for, and what a shape's inputs would take of this machine's memory.

Each bound is far above what a benchmark of these models needs and below where a run would fail later with an
``OverflowError`` or ``MemoryError`` (or time out waiting on a number too large for the operating system); a
suite beyond one is refused when it is read, with one line naming the field.
"""

from __future__ import annotations

import os

from compbench.common.fields import bounded_int

MAX_BATCH_SIZE = 65_536             # rows per call: timed shapes, evaluation, training
MIN_SEQ_LEN = 8                     # tokens per row ...
MAX_SEQ_LEN = 512                   # ... BERT-family models have 512 positions
MAX_PROMPT_LEN = 32_768             # a causal LM's timed prompt tokens (measure.seq_lens of a language task)
MAX_ITERS = 1_000_000               # calls per shape: warm-up, and the least and most timed
MAX_RESAMPLES = 1_000_000           # bootstrap resamples of an interval
MAX_EPOCHS = 10_000
MAX_STEPS = 1_000_000_000           # optimiser steps
MAX_SEED = 2**32 - 1                # numpy's global seed and pandas' random_state take 0 .. 2**32 - 1
MAX_THREADS = 4_096
MAX_TIMING_SECONDS = 86_400.0       # measure.min_seconds / max_seconds: a day per shape
MAX_TIMEOUT_SECONDS = 604_800.0     # runner timeouts, a week (waits beyond about 24 days overflow poll())

INPUT_TENSORS = 3                   # input_ids, attention_mask, token_type_ids ...
INPUT_ITEM_BYTES = 8                # ... int64 each
BOOTSTRAP_ARRAYS = 3                # a paired bootstrap holds resamples x calls of: indices, and both sides' values
BOOTSTRAP_ITEM_BYTES = 8            # int64 indices, float64 values


BatchSize = bounded_int(1, MAX_BATCH_SIZE)
SeqLen = bounded_int(MIN_SEQ_LEN, MAX_SEQ_LEN)
PromptLen = bounded_int(MIN_SEQ_LEN, MAX_PROMPT_LEN)
Seed = bounded_int(0, MAX_SEED)


def machine_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def input_bytes(batch_size: int, seq_len: int) -> int:
    """Bytes of one batch's input tensors: a lower bound on what a call at this shape needs (the model's
    activations come on top, and depend on the model)."""
    return batch_size * seq_len * INPUT_TENSORS * INPUT_ITEM_BYTES


def bootstrap_bytes(resamples: int, calls: int) -> int:
    """Bytes the paired bootstrap of a speed-up holds at once over ``calls`` timed pairs."""
    return resamples * calls * BOOTSTRAP_ARRAYS * BOOTSTRAP_ITEM_BYTES


def show_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"
