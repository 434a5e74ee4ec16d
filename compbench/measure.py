"""Size, latency and accuracy: one implementation of the measurement rules for every backend."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from compbench.artifact import ModelArtifact, files_size
from compbench.backends.base import Session
from compbench.encoding import Batch, encode_rows, predict_logits
from compbench.metrics import bootstrap_ci, compute_metrics, predictions_from_logits
from compbench.tasks import TaskData

SeqLen = Annotated[int, Field(ge=8, le=512)]


class MeasureConfig(BaseModel):
    """The suite's ``measure:`` section."""

    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 32], min_length=1)
    seq_lens: list[SeqLen] = Field(default_factory=lambda: [128], min_length=1, description="padded tokens per row, 8..512")
    warmup_iters: int = Field(5, ge=0, description="untimed calls before timing")
    min_iters: int = Field(20, ge=1, description="timed calls: at least this many ...")
    min_seconds: float = Field(2.0, ge=0, description="... and at least this long")
    max_iters: int = Field(10_000, ge=1, description="stop timing after this many calls")
    eval_batch_size: int = Field(64, ge=1)
    bootstrap_resamples: int = Field(1000, ge=100)


def size_of(artifact: ModelArtifact, session: Session) -> dict:
    """Parameters as stored, and the bytes of the files the session deployed."""
    params, nonzero = artifact.parameter_counts()
    return {"size_bytes": files_size(session.deployed_files), "params": params, "nonzero_params": nonzero}


def time_session(session: Session, batch: Batch, config: MeasureConfig) -> tuple[dict, list[float]]:
    """Latency of one inference on ``batch`` in ms: cold first call apart, then warm-up, then at
    least ``min_iters`` calls AND ``min_seconds`` of timed calls.

    The batch is put where the model reads it first (``session.prepare``: on the GPU for a CUDA
    session), and each call is timed by the session's own clock (CUDA events read after a
    synchronisation for asynchronous work), so the numbers are compute, not copies.
    Returns the summary (``latency_stats``) and every timed call in ms (rounded to 0.1 us),
    which reports use to tell a real speed-up from overlapping distributions."""
    prepared = session.prepare(batch)
    clock = session.clock()

    def call() -> None:
        session.run_prepared(prepared)

    cold_ms = clock.time_ms(call)
    for _ in range(config.warmup_iters):
        call()
    samples: list[float] = []
    timed_ms = 0.0
    while len(samples) < config.max_iters and (len(samples) < config.min_iters or timed_ms < config.min_seconds * 1e3):
        elapsed = clock.time_ms(call)
        timed_ms += elapsed
        samples.append(elapsed)
    return latency_stats(np.asarray(samples), cold_ms), [round(value, 4) for value in samples]


def time_shape(session: Session, batch: Batch, config: MeasureConfig) -> dict:
    """A row's timing fields for one shape: ``latency_ms``, ``latency_samples_ms`` and, on a device,
    the copy and the peak memory over these calls (``device_costs``)."""
    session.reset_memory_peak()
    latency, samples = time_session(session, batch, config)
    return {"latency_ms": latency, "latency_samples_ms": samples, **device_costs(session, batch)}


TRANSFER_REPEATS = 5


def device_costs(session: Session, batch: Batch) -> dict:
    """What a device session adds to the latency: the host-to-device copy of the batch (median
    ms of a few copies, timed apart from compute) and peak device memory (allocated and
    reserved) over the session's calls so far. Empty for sessions that read host memory."""
    out: dict = {}
    copies = [session.transfer_ms(batch) for _ in range(TRANSFER_REPEATS)]
    if copies[0] is not None:
        out["h2d_copy_ms"] = float(np.median(copies))
    memory = session.memory_peak()
    if memory is not None:
        out["gpu_memory"] = memory
    return out


def latency_stats(samples_ms: np.ndarray, cold_ms: float) -> dict:
    p10, p50, p90, p99 = np.percentile(samples_ms, [10, 50, 90, 99])
    return {
        "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99),
        "mean": float(samples_ms.mean()), "std": float(samples_ms.std(ddof=1)) if len(samples_ms) > 1 else 0.0,
        "min": float(samples_ms.min()), "n": int(len(samples_ms)), "cold": float(cold_ms),
    }


def evaluate_session(
    session: Session, tokenizer, data: TaskData, max_seq_len: int, config: MeasureConfig, seed: int
) -> tuple[dict, np.ndarray]:
    """The task's official metrics on its evaluation split(s), through ``session``, and the
    primary split's logits.

    The first metric of the primary split is the headline (``metric``) with a 95%
    bootstrap interval; further splits (MNLI mismatched) are added as ``split/metric``.
    """
    task = data.task
    result: dict = {"metrics": {}}
    primary_logits = np.empty(0)
    for split_index, (split, rows) in enumerate(data.eval.items()):
        logits, labels = split_logits(session, tokenizer, data, rows, max_seq_len, config.eval_batch_size)
        predictions = predictions_from_logits(task, logits)
        scores = compute_metrics(task, predictions, labels)
        prefix = "" if split_index == 0 else f"{split}/"
        result["metrics"].update({prefix + name: value for name, value in scores.items()})
        if split_index == 0:
            name = task.metric_names[0]
            interval = bootstrap_ci(name, predictions, labels, n_resamples=config.bootstrap_resamples, seed=seed)
            result.update(
                metric_name=name, metric=scores[name], metric_ci95=interval.as_list(),
                eval_split=split, eval_rows=int(len(labels)), predictions=predictions.tolist(), labels=np.asarray(labels).tolist(),
            )
            primary_logits = logits
    return result, primary_logits


def split_logits(session: Session, tokenizer, data: TaskData, rows: pd.DataFrame, max_seq_len: int, batch_size: int):
    """Logits of every row (in order) and the labels."""
    encoded = encode_rows(tokenizer, data.task, rows, max_seq_len)
    return predict_logits(session.run, tokenizer, encoded, batch_size), encoded.labels


def max_abs_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(logits, dtype=np.float64) - reference)))
