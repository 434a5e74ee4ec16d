"""Latency: one implementation of the timing rules for every backend.

- **Cold**: the first call at each shape right after the model is loaded, before anything else runs on
  it (``cold_ms``), reported apart.
- **Timed calls**: after warm-up, at least ``min_iters`` calls AND ``min_seconds``; then on, checked every
  few calls, until the 95% interval of the median (of the speed-up, when there is a reference) is within
  ``± target_precision``, or ``max_seconds`` / ``max_iters`` are reached.
- **Speed-ups are measured, not subtracted**: a model compared with the teacher is timed interleaved with
  it in the same process and window (calls alternating, in ABBA order so neither always goes first); the
  speed-up is the ratio of the two medians with a paired bootstrap interval over the pairs. Drift of the
  machine between two cells timed minutes apart cannot show up as a speed-up. Its ``resolution`` is the
  timing's ``target_precision``: two instances of one model differ by up to ~2% through memory layout
  alone (measured: an A/A pair at 0.988 [0.982, 0.998]), so a difference is claimed only beyond it.
- Each call is timed by the session's own clock on a batch already where the model reads it (CUDA events
  for asynchronous work); the host-to-device copy and peak device memory are measured apart, with the
  model alone loaded (``device_costs``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compbench.backends.base import Clock, Session
from compbench.common.statistics import median_interval, median_ratio
from compbench.config.measure import MeasureConfig
from compbench.tasks.encoding import Batch

CHECK_EVERY = 10            # timed calls (pairs) between two checks of the precision target
CHECK_RESAMPLES = 200       # bootstrap resamples for a check (the reported interval uses the suite's count)
MEMORY_CALLS = 3            # calls over which a device's peak memory is read
TRANSFER_REPEATS = 5


@dataclass
class Call:
    """One session's inference on one batch already placed where the session reads it."""

    session: Session
    prepared: Any
    clock: Clock

    @classmethod
    def of(cls, session: Session, batch: Batch) -> "Call":
        return cls(session, session.prepare(batch), session.clock())

    def time_ms(self) -> float:
        return self.clock.time_ms(lambda: self.session.run_prepared(self.prepared))


def cold_ms(session: Session, batch: Batch) -> float:
    """ms of the first call at this shape (the caller makes it the first thing after loading)."""
    return Call.of(session, batch).time_ms()


def timed_calls(model: Call, reference: Call | None, config: MeasureConfig) -> tuple[list[float], list[float]]:
    """Warm-up, then the timed calls of ``model`` (and of ``reference``, interleaved with them) in ms."""
    for _ in range(config.warmup_iters):
        for call in (model, reference) if reference else (model,):
            call.time_ms()
    model_ms: list[float] = []
    reference_ms: list[float] = []
    start = time.perf_counter()
    while len(model_ms) < config.max_iters:
        if reference is None:
            model_ms.append(model.time_ms())
        elif len(model_ms) % 2 == 0:                   # ABBA: model first, then reference first, ...
            model_ms.append(model.time_ms())
            reference_ms.append(reference.time_ms())
        else:
            reference_ms.append(reference.time_ms())
            model_ms.append(model.time_ms())
        elapsed = time.perf_counter() - start
        if len(model_ms) < config.min_iters or elapsed < config.min_seconds:
            continue
        if elapsed >= config.max_seconds:
            break
        if len(model_ms) % CHECK_EVERY == 0 and _precise_enough(model_ms, reference_ms, config.target_precision):
            break
    return model_ms, reference_ms


def _precise_enough(model_ms: list[float], reference_ms: list[float], target: float) -> bool:
    estimate = (median_ratio(reference_ms, model_ms, paired=True, resamples=CHECK_RESAMPLES) if reference_ms
                else median_interval(model_ms, resamples=CHECK_RESAMPLES))
    return estimate.relative_half_width() <= target


def shape_timing(model_ms: list[float], reference_ms: list[float], cold: float, config: MeasureConfig,
                 seed: int) -> dict:
    """A row's timing fields: ``latency_ms``, every timed call, and with a reference the ``speedup``
    (its median over the model's, with the paired 95% interval)."""
    out: dict = {"latency_ms": latency_stats(np.asarray(model_ms), cold),
                 "latency_samples_ms": [round(value, 4) for value in model_ms]}
    if reference_ms:
        out["speedup"] = interleaved_speedup(model_ms, reference_ms, config, seed, "reference_p50_ms")
    return out


def interleaved_speedup(model_ms: list[float], reference_ms: list[float], config: MeasureConfig, seed: int,
                        reference_key: str) -> dict:
    """The reference's median over the model's, from calls timed interleaved in pairs, with the paired 95%
    bootstrap interval; ``reference_key`` names the reference's median ms."""
    ratio = median_ratio(reference_ms, model_ms, paired=True, resamples=config.bootstrap_resamples, seed=seed)
    return {"ratio": ratio.value, "ci95": ratio.as_list(), "pairs": len(model_ms),
            reference_key: float(np.median(reference_ms)), "interleaved": True,
            "resolution": config.target_precision}


def device_costs(session: Session, batch: Batch, config: MeasureConfig) -> dict:
    """What a device session adds to the latency, with this model alone loaded: the host-to-device copy of
    the batch (median ms of a few copies, timed apart from compute) and peak device memory (allocated and
    reserved) over a few calls, from a fresh count. Empty for sessions that read host memory."""
    out: dict = {}
    copies = [session.transfer_ms(batch) for _ in range(TRANSFER_REPEATS)]
    if copies[0] is None:
        return out
    out["h2d_copy_ms"] = float(np.median(copies))
    session.reset_memory_peak()
    call = Call.of(session, batch)
    for _ in range(MEMORY_CALLS):
        call.time_ms()
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
