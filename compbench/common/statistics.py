"""Intervals for timings: the median of the timed calls, and the ratio of two medians (a speed-up),
by percentile bootstrap. One implementation for the stopping rule, the rows and ``compbench compare``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What two timings of one model can differ by through memory layout alone: an A/A pair measured 0.988
# [0.982, 0.998] on a 2-core CPU. A latency ratio is called a difference only beyond it.
TIMING_RESOLUTION = 0.02


@dataclass(frozen=True)
class Estimate:
    """A value with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return self.low > value or self.high < value

    def beyond(self, value: float, resolution: float) -> bool:
        """Whether the whole interval lies outside ``value`` +- ``resolution`` (a share of it): a difference
        larger than the measurement can resolve."""
        return self.low > value * (1 + resolution) or self.high < value * (1 - resolution)

    def relative_half_width(self) -> float:
        """Half the interval's width over the value (how precisely the value is known)."""
        return (self.high - self.low) / 2 / abs(self.value) if self.value else float("inf")

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def median_interval(samples, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """The median of ``samples`` and its interval (resampling the samples)."""
    values = np.asarray(samples, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    return _estimate(float(np.median(values)), np.median(values[draws], axis=1), confidence)


def median_ratio(numerator, denominator, *, paired: bool, resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> Estimate:
    """``median(numerator) / median(denominator)`` and its interval. ``paired``: the i-th samples of both were
    taken next to each other (interleaved calls), so pairs are resampled together and what the machine did
    meanwhile cancels; otherwise each side is resampled on its own (two runs' timings)."""
    top, bottom = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if paired and len(top) != len(bottom):
        raise ValueError(f"paired samples need equal counts, got {len(top)} and {len(bottom)}")
    rng = np.random.default_rng(seed)
    top_draws = rng.integers(0, len(top), size=(resamples, len(top)))
    bottom_draws = top_draws if paired else rng.integers(0, len(bottom), size=(resamples, len(bottom)))
    ratios = np.median(top[top_draws], axis=1) / np.median(bottom[bottom_draws], axis=1)
    return _estimate(float(np.median(top) / np.median(bottom)), ratios, confidence)


def _estimate(value: float, draws: np.ndarray, confidence: float) -> Estimate:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))
