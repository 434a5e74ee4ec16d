"""Pareto fronts with costs within the timing's resolution tied: a model 1% faster (inside the 2% two copies of one
model can differ by) and a point less accurate is not on the front; one measurably faster is."""

from __future__ import annotations

import numpy as np
import pytest

from compbench.results.pareto import front_order, pareto_mask


def brute_force(cost, score, resolution):
    """The definition, point by point: i is dominated by j when j is no worse in score and not measurably costlier,
    and better in score or measurably cheaper."""
    out = []
    for i in range(len(cost)):
        dominated = any(j != i and cost[j] <= cost[i] * (1 + resolution) and score[j] >= score[i]
                        and (score[j] > score[i] or cost[j] * (1 + resolution) < cost[i]) for j in range(len(cost)))
        out.append(not dominated)
    return out


def test_a_speedup_within_the_resolution_is_a_tie_the_better_metric_wins():
    # costs are 1 / speed-up: 2.00x at 0.90, 2.02x (1% faster: a tie) at 0.89, 2.10x (5% faster) at 0.88
    cost, score = [1 / 2.00, 1 / 2.02, 1 / 2.10], [0.90, 0.89, 0.88]
    assert pareto_mask(cost, score).tolist() == [True, True, True]           # exact comparison: all three
    assert pareto_mask(cost, score, 0.02).tolist() == [True, False, True]    # 2.02x is 2.00x within 2%
    assert front_order(cost, score, 0.02) == [2, 0]


def test_equal_scores_within_the_resolution_are_both_kept():
    assert pareto_mask([1.0, 1.01], [0.5, 0.5], 0.02).tolist() == [True, True]
    assert pareto_mask([1.0, 1.05], [0.5, 0.5], 0.02).tolist() == [True, False]


@pytest.mark.parametrize("seed", range(5))
def test_the_tolerant_front_is_the_definition_on_random_points(seed):
    rng = np.random.default_rng(seed)
    cost, score = rng.uniform(0.1, 1.0, 30), rng.choice([0.80, 0.81, 0.82, 0.83], 30)
    assert pareto_mask(cost, score, 0.05).tolist() == brute_force(cost, score, 0.05)
    assert pareto_mask(cost, score, 0.0).tolist() == brute_force(cost, score, 0.0)


def test_nan_points_are_never_on_it_and_a_resolution_needs_positive_costs():
    assert pareto_mask([float("nan"), 1.0], [1.0, 0.5], 0.02).tolist() == [False, True]
    with pytest.raises(ValueError, match="positive costs"):
        pareto_mask([-1.0, 1.0], [1.0, 0.5], 0.02)
