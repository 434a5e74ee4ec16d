"""Official metrics against hand-computed cases, and the bootstrap intervals."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from compbench.tasks.glue import TASKS
from compbench.tasks.metrics import (
    METRICS,
    Interval,
    bootstrap_ci,
    compute_metrics,
    paired_bootstrap_delta,
    predictions_from_logits,
)

# A small binary case: tp = 3 (rows 0, 1, 5), fp = 1 (row 2), fn = 2 (rows 3, 7), tn = 2 (rows 4, 6).
PREDS = np.array([1, 1, 1, 0, 0, 1, 0, 0])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 1])


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """No metric may warn (e.g. scipy's constant-input warning) on the cases below."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_accuracy_by_hand() -> None:
    assert METRICS["accuracy"](np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.75


def test_f1_by_hand() -> None:
    # precision 3/4, recall 3/5: F1 = 2 * 0.75 * 0.6 / 1.35 = 2/3
    assert METRICS["f1"](PREDS, LABELS) == pytest.approx(2 / 3)


def test_f1_without_any_positive_is_zero() -> None:
    assert METRICS["f1"](np.zeros(4, int), np.zeros(4, int)) == 0.0


def test_matthews_by_hand() -> None:
    expected = (3 * 2 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (2 + 1) * (2 + 2))  # 4 / sqrt(240)
    assert METRICS["matthews_correlation"](PREDS, LABELS) == pytest.approx(expected)
    assert expected == pytest.approx(0.2581988897)


def test_matthews_single_class_is_zero() -> None:
    assert METRICS["matthews_correlation"](np.ones(5, int), np.array([0, 1, 1, 0, 1])) == 0.0
    assert METRICS["matthews_correlation"](np.ones(5, int), np.ones(5, int)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    preds = np.where(rng.random(300) < 0.7, labels, 1 - labels)
    assert METRICS["accuracy"](preds, labels) == pytest.approx(accuracy_score(labels, preds))
    assert METRICS["f1"](preds, labels) == pytest.approx(f1_score(labels, preds))
    assert METRICS["matthews_correlation"](preds, labels) == pytest.approx(matthews_corrcoef(labels, preds))
    three_labels, three_preds = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert METRICS["matthews_correlation"](three_preds, three_labels) == pytest.approx(
        matthews_corrcoef(three_labels, three_preds))


def test_pearson_of_linear_data_is_one() -> None:
    x = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    assert METRICS["pearson"](3 * x + 1, x) == pytest.approx(1.0)
    assert METRICS["pearson"](-2 * x, x) == pytest.approx(-1.0)


def test_spearman_of_monotone_nonlinear_data_is_one() -> None:
    x = np.array([0.1, 0.5, 1.0, 2.0, 3.0, 4.5])
    assert METRICS["spearmanr"](np.exp(x) + x**3, x) == pytest.approx(1.0)
    assert METRICS["pearson"](np.exp(x) + x**3, x) < 0.99


@pytest.mark.parametrize("name", ["pearson", "spearmanr"])
def test_constant_input_correlation_is_zero(name: str) -> None:
    varying = np.array([1.0, 2.0, 3.0, 4.0])
    assert METRICS[name](np.full(4, 2.5), varying) == 0.0
    assert METRICS[name](varying, np.full(4, 2.5)) == 0.0


def test_metrics_are_plain_floats() -> None:
    for fn in METRICS.values():
        assert type(fn(PREDS, LABELS)) is float


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        METRICS["accuracy"](np.array([1, 0, 1]), np.array([1, 0]))


def test_compute_metrics_gives_every_official_metric() -> None:
    assert compute_metrics(TASKS["mrpc"], PREDS, LABELS) == pytest.approx({"f1": 2 / 3, "accuracy": 5 / 8})
    assert list(compute_metrics(TASKS["cola"], PREDS, LABELS)) == ["matthews_correlation"]
    scores = np.array([0.0, 1.0, 2.0, 3.0])
    assert compute_metrics(TASKS["stsb"], 2 * scores, scores) == pytest.approx({"pearson": 1.0, "spearmanr": 1.0})


def test_predictions_from_logits() -> None:
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    np.testing.assert_array_equal(predictions_from_logits(TASKS["sst2"], logits), [1, 0, 1])
    mnli = np.array([[0.0, 0.1, 0.9], [2.0, 0.1, 0.3]])
    np.testing.assert_array_equal(predictions_from_logits(TASKS["mnli"], mnli), [2, 0])
    regression = predictions_from_logits(TASKS["stsb"], np.array([[1.5], [4.25]], dtype=np.float32))
    assert regression.dtype == np.float64 and regression.tolist() == [1.5, 4.25]
    assert predictions_from_logits(TASKS["stsb"], np.array([1.0, 2.0])).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        predictions_from_logits(TASKS["mnli"], logits)


# ----------------------------------------------------------------------------- bootstrap


def _eight_hundred_of_a_thousand() -> tuple[np.ndarray, np.ndarray]:
    labels = np.tile([0, 1], 500)
    preds = labels.copy()
    preds[:200] = 1 - preds[:200]
    return preds, labels


def test_bootstrap_interval_of_a_known_accuracy() -> None:
    preds, labels = _eight_hundred_of_a_thousand()
    assert METRICS["accuracy"](preds, labels) == 0.8
    interval = bootstrap_ci("accuracy", preds, labels, seed=0)
    assert interval.low < 0.8 < interval.high
    expected_width = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 1000)  # normal approximation, ~0.0496
    assert interval.high - interval.low == pytest.approx(expected_width, rel=0.3)


def test_bootstrap_is_seeded() -> None:
    preds, labels = _eight_hundred_of_a_thousand()
    first = bootstrap_ci("accuracy", preds, labels, n_resamples=200, seed=7)
    assert bootstrap_ci("accuracy", preds, labels, n_resamples=200, seed=7) == first
    assert bootstrap_ci("accuracy", preds, labels, n_resamples=200, seed=8) != first
    delta = paired_bootstrap_delta("accuracy", preds, labels, labels, n_resamples=200, seed=7)
    assert paired_bootstrap_delta("accuracy", preds, labels, labels, n_resamples=200, seed=7) == delta


def test_all_correct_gives_a_zero_width_interval() -> None:
    labels = np.tile([0, 1, 1], 100)
    assert bootstrap_ci("accuracy", labels, labels).as_list() == [1.0, 1.0]
    assert bootstrap_ci("f1", labels, labels).as_list() == [1.0, 1.0]


def test_identical_predictions_give_zero_delta() -> None:
    preds, labels = _eight_hundred_of_a_thousand()
    for metric in ("accuracy", "f1", "matthews_correlation"):
        delta, interval = paired_bootstrap_delta(metric, preds, preds.copy(), labels)
        assert delta == 0.0 and interval == Interval(0.0, 0.0)


def test_clearly_better_b_excludes_zero() -> None:
    preds_a, labels = _eight_hundred_of_a_thousand()
    preds_b = labels.copy()
    preds_b[:100] = 1 - preds_b[:100]  # 90% correct vs 80%
    delta, interval = paired_bootstrap_delta("accuracy", preds_a, preds_b, labels)
    assert delta == pytest.approx(0.1)
    assert 0.0 < interval.low < 0.1 < interval.high
    reverse, reversed_interval = paired_bootstrap_delta("accuracy", preds_b, preds_a, labels)
    assert reverse == pytest.approx(-0.1) and reversed_interval.high < 0.0


def test_bootstrap_of_correlations_never_nan() -> None:
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 200)
    constant = np.full(200, 2.5)
    for metric in ("pearson", "spearmanr"):
        interval = bootstrap_ci(metric, constant, labels, n_resamples=100)
        assert interval.as_list() == [0.0, 0.0]
        noisy = bootstrap_ci(metric, labels + rng.normal(0, 1, 200), labels, n_resamples=100)
        assert 0.0 < noisy.low < noisy.high <= 1.0


def test_bootstrap_of_tiny_samples_is_finite() -> None:
    for metric in METRICS:
        interval = bootstrap_ci(metric, np.array([1, 0]), np.array([1, 1]), n_resamples=50)
        assert all(math.isfinite(v) for v in interval.as_list())


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        bootstrap_ci("auc", PREDS, LABELS)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci("accuracy", PREDS, LABELS, confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap_delta("accuracy", PREDS, PREDS, LABELS, n_resamples=0)


def test_bootstrap_of_accuracy_is_fast() -> None:
    preds, labels = _eight_hundred_of_a_thousand()
    start = time.perf_counter()
    paired_bootstrap_delta("accuracy", preds, labels, labels, n_resamples=1000)
    assert time.perf_counter() - start < 2.0
