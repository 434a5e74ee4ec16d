"""Latency: one implementation of the timing rules for every backend (cold call apart, warm-up, at least
N calls and T seconds, the session's own clock), and what a device adds (the host-to-device copy, peak memory).
"""

from __future__ import annotations

import numpy as np

from compbench.backends.base import Session
from compbench.config.measure import MeasureConfig
from compbench.tasks.encoding import Batch


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
