"""Pareto fronts of (cost, score) points: lower cost is better, higher score is better.

Cost is something like latency in ms or size in bytes; score is a quality metric.
A point is on the front when no other point is at least as good on both axes and
strictly better on one. Points with a NaN coordinate are never on the front and
never dominate another point. Identical points do not dominate each other, so
duplicates on the front are all kept.

With a ``cost_resolution`` (a measured timing's, e.g. 2%: what two copies of one model
differ by), costs within that relative distance are a tie: a point is then dominated by
one that is no worse in score and not measurably costlier, and better in score or
measurably cheaper. A model 1% faster and a point less accurate is not on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(cost: Sequence[float], score: Sequence[float], cost_resolution: float = 0.0) -> np.ndarray:
    """Boolean array, True where point ``i`` (``cost[i]``, ``score[i]``) is on the Pareto front; costs within
    ``cost_resolution`` of each other (relative; costs then positive) are tied (module docstring).

    O(n log n) without a resolution: sort by cost ascending (best score first within equal cost), then sweep,
    keeping the best score seen among strictly cheaper points.
    """
    c = np.asarray(cost, dtype=float)
    s = np.asarray(score, dtype=float)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"cost and score must be 1-D and of equal length, got {c.shape} and {s.shape}")
    if cost_resolution:
        return _tolerant_mask(c, s, cost_resolution)
    mask = np.zeros(c.shape, dtype=bool)
    valid = np.flatnonzero(~(np.isnan(c) | np.isnan(s)))
    if valid.size == 0:
        return mask
    # lexsort: last key is primary -> cost ascending, then score descending.
    order = valid[np.lexsort((-s[valid], c[valid]))]
    best_cheaper = -np.inf  # best score among points with strictly lower cost
    i = 0
    while i < order.size:
        # One group of points sharing the same cost; the group's first point has its best score.
        j = i
        while j < order.size and c[order[j]] == c[order[i]]:
            j += 1
        group = order[i:j]
        group_best = s[group[0]]
        # Within the group only points matching the group's best score survive; across groups
        # a point survives only if it beats every strictly cheaper point's score.
        if group_best > best_cheaper:
            mask[group[s[group] == group_best]] = True
        best_cheaper = max(best_cheaper, group_best)
        i = j
    return mask


def _tolerant_mask(c: np.ndarray, s: np.ndarray, resolution: float) -> np.ndarray:
    """``pareto_mask`` with costs within ``resolution`` of each other tied (O(n^2): fronts of a run's rows)."""
    valid = ~(np.isnan(c) | np.isnan(s))
    if resolution < 0 or np.any(c[valid] <= 0):
        raise ValueError(f"a cost resolution ({resolution}) needs positive costs and a resolution >= 0")
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        for j in np.flatnonzero(valid):
            not_costlier = c[j] <= c[i] * (1 + resolution)
            cheaper = c[j] * (1 + resolution) < c[i]
            if j != i and not_costlier and s[j] >= s[i] and (s[j] > s[i] or cheaper):
                mask[i] = False
                break
    return mask


def front_order(cost: Sequence[float], score: Sequence[float], cost_resolution: float = 0.0) -> list[int]:
    """Indices of the front points, sorted by ascending cost (ties: ascending index), for drawing a step line."""
    c = np.asarray(cost, dtype=float)
    idx = np.flatnonzero(pareto_mask(cost, score, cost_resolution))
    return [int(i) for i in idx[np.argsort(c[idx], kind="stable")]]
