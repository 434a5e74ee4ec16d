"""Pareto fronts of (cost, score) points: lower cost is better, higher score is better.

Cost is something like latency in ms or size in bytes; score is a quality metric.
A point is on the front when no other point is at least as good on both axes and
strictly better on one. Points with a NaN coordinate are never on the front and
never dominate another point. Identical points do not dominate each other, so
duplicates on the front are all kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Boolean array, True where point ``i`` (``cost[i]``, ``score[i]``) is on the Pareto front.

    O(n log n): sort by cost ascending (best score first within equal cost), then sweep,
    keeping the best score seen among strictly cheaper points.
    """
    c = np.asarray(cost, dtype=float)
    s = np.asarray(score, dtype=float)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"cost and score must be 1-D and of equal length, got {c.shape} and {s.shape}")
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


def front_order(cost: Sequence[float], score: Sequence[float]) -> list[int]:
    """Indices of the front points, sorted by ascending cost (ties: ascending index), for drawing a step line."""
    c = np.asarray(cost, dtype=float)
    idx = np.flatnonzero(pareto_mask(cost, score))
    return [int(i) for i in idx[np.argsort(c[idx], kind="stable")]]
