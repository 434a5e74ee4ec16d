"""Latency: one implementation of the timing rules for every backend.

- **Cold**: the first call at each shape right after the model is loaded, before anything else runs on
  it (``cold_ms``), reported apart.
- **Timed calls**: after warm-up, at least ``min_iters`` calls AND ``min_seconds``; then on, checked every
  few calls, until the 95% interval of the median (of the speed-up, when there is a reference) is within
  ``± target_precision``, or ``max_seconds`` / ``max_iters`` are reached.
- **Speed-ups are measured, not subtracted**: a model compared with the teacher is timed interleaved with
  it in the same process and window (calls alternating, in ABBA order so neither always goes first); the
  speed-up is the ratio of the two medians with a paired bootstrap interval over the pairs. With two references
  (the teacher on the cell's backend and on the suite's reference backend) the three calls of a round follow
  every order in turn (012, 021, 102, 120, 201, 210): each goes first equally often, and each pair runs either way
  round equally often; a round's three times form one resampled unit. Drift of the
  machine between two cells timed minutes apart cannot show up as a speed-up. Its ``resolution`` is the
  timing's ``target_precision``: two instances of one model differ by up to ~2% through memory layout
  alone (measured: an A/A pair at 0.988 [0.982, 0.998]), so a difference is claimed only beyond it.
- Each call is timed by the session's own clock on a batch already where the model reads it (CUDA events
  for asynchronous work); the host-to-device copy and peak device memory are measured apart, with the
  model alone loaded (``device_costs``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np

from compbench.backends.base import Clock, Session
from compbench.common.statistics import median_interval, median_ratio
from compbench.config.measure import MeasureConfig
from compbench.tasks.encoding import Batch, batch_list

CHECK_EVERY = 10            # timed calls (pairs) between two checks of the precision target
CHECK_RESAMPLES = 200       # bootstrap resamples for a check (the reported interval uses the suite's count)
MEMORY_CALLS = 3            # calls over which a device's peak memory is read
TRANSFER_REPEATS = 5


@dataclass
class Call:
    """One session's inference on a batch already placed where the session reads it, or on each of several in turn
    (a natural-length shape: call i runs batch i modulo their number, so calls interleaved round by round run the
    same rows)."""

    session: Session
    prepared: list[Any]
    clock: Clock
    threads: int | None = None     # torch's process-wide thread count to set first (sessions timed together differ)
    ran: list[int] = field(default_factory=list)    # the batch each call ran, in order (warm-up included)

    @classmethod
    def of(cls, session: Session, batches: Batch | list[Batch], threads: int | None = None) -> "Call":
        return cls(session, [session.prepare(batch) for batch in batch_list(batches)], session.clock(), threads)

    def time_ms(self) -> float:
        pin_torch_threads(self.threads)
        index = len(self.ran) % len(self.prepared)
        self.ran.append(index)
        prepared = self.prepared[index]
        return self.clock.time_ms(lambda: self.session.run_prepared(prepared))


def pin_torch_threads(threads: int | None) -> None:
    """Set torch's process-wide intra-op threads to ``threads`` before a call (outside its timing) where sessions at
    different thread counts are timed in turn: each PyTorch session sets them once, when it is loaded."""
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cold_ms(session: Session, batch: Batch) -> float:
    """ms of the first call at this shape (the caller makes it the first thing after loading)."""
    return Call.of(session, batch).time_ms()


def timed_calls(model: Call, reference: Call | None, config: MeasureConfig) -> tuple[list[float], list[float]]:
    """Warm-up, then the timed calls of ``model`` (and of ``reference``, interleaved with them) in ms."""
    model_ms, references_ms = interleaved_calls(model, [reference] if reference is not None else [], config)
    return model_ms, references_ms[0] if references_ms else []


def interleaved_calls(model: Call, references: list, config: MeasureConfig) -> tuple[list[float], list[list[float]]]:
    """Warm-up, then rounds of one call of ``model`` and one of each of ``references``, every order in turn (two
    calls: ABBA); the i-th times of all of them come from one round. Timing goes on to at least ``min_iters``
    rounds and ``min_seconds``, then until every ratio (or, alone, the median) is within the target precision,
    or ``max_seconds`` / ``max_iters``."""
    calls = [model, *references]
    for _ in range(config.warmup_iters):
        for call in calls:
            call.time_ms()
    times: list[list[float]] = [[] for _ in calls]
    orders = list(permutations(range(len(calls))))
    check_every = -(-CHECK_EVERY // len(orders)) * len(orders)     # whole cycles of orders between checks
    start = time.perf_counter()
    while len(times[0]) < config.max_iters:
        for index in orders[len(times[0]) % len(orders)]:
            times[index].append(calls[index].time_ms())
        elapsed = time.perf_counter() - start
        if len(times[0]) < config.min_iters or elapsed < config.min_seconds:
            continue
        if elapsed >= config.max_seconds:
            break
        if len(times[0]) % check_every == 0 and _precise_enough(times[0], times[1:], config.target_precision):
            break
    return times[0], times[1:]


def _precise_enough(model_ms: list[float], references_ms: list[list[float]], target: float) -> bool:
    if not references_ms:
        return median_interval(model_ms, resamples=CHECK_RESAMPLES).relative_half_width() <= target
    return all(median_ratio(reference_ms, model_ms, paired=True, resamples=CHECK_RESAMPLES).relative_half_width()
               <= target for reference_ms in references_ms)


def shape_timing(model_ms: list[float], reference_ms: list[float], cold: float, config: MeasureConfig,
                 seed: int, served_ms: list[float] | None = None) -> dict:
    """A row's timing fields: ``latency_ms``, every timed call, and with a reference the ``speedup``
    (its median over the model's, with the paired 95% interval); with ``served_ms`` (the teacher on the reference
    backend, timed in the same rounds) ``speedup_vs_reference`` likewise, with every call of the reference's
    (``reference_samples_ms``, the i-th in the round of the model's i-th; the caller names the reference)."""
    out: dict = {"latency_ms": latency_stats(np.asarray(model_ms), cold),
                 "latency_samples_ms": [round(value, 4) for value in model_ms]}
    if reference_ms:
        out["speedup"] = interleaved_speedup(model_ms, reference_ms, config, seed, "reference_p50_ms")
    if served_ms:
        out["speedup_vs_reference"] = {**interleaved_speedup(model_ms, served_ms, config, seed, "reference_p50_ms"),
                                       "reference_samples_ms": [round(value, 4) for value in served_ms]}
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
