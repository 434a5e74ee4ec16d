"""The metrics of every task kind (binary with auroc, multi-class, multi-label, regression) against
scikit-learn and scipy on random arrays, their bootstrap and paired deltas, what rows store for them, and
the report's re-scoring of stored rows (results.analysis) and constant-prediction baselines (results.trust)."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

from compbench.results.analysis import paired_delta
from compbench.results.trust import constant_score
from compbench.tasks.glue import TASKS, TaskSpec
from compbench.tasks.metrics import (
    METRICS,
    bootstrap_ci,
    compute_metrics,
    default_metrics,
    metric_problem,
    paired_bootstrap_delta,
    predictions_from_logits,
    wants_scores,
)

BINARY_AUROC = TaskSpec("spam", ("text",), 2, ("auroc", "f1", "accuracy"), ("validation",),
                        label_names=("ham", "spam"))
THREE = TaskSpec("three", ("text",), 3, ("accuracy", "macro_f1", "micro_f1", "matthews"), ("validation",))
TOPICS = TaskSpec("topics", ("text",), 4, ("micro_f1", "macro_f1", "accuracy"), ("validation",), kind="multi_label",
                  label_names=("a", "b", "c", "d"))
SCORES = TaskSpec("scores", ("a", "b"), 1, ("spearman", "pearson"), ("validation",))


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """No metric may warn (division by zero, constant input) on any case below."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def sk(fn, labels, preds, **kwargs) -> float:
    """A scikit-learn metric, its own warnings (zero division on degenerate draws) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(labels, preds, **kwargs))


# ----------------------------------------------------------------------------------------------- against sklearn


@pytest.mark.parametrize("seed", range(40))
def test_single_label_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 80)), int(rng.integers(2, 6))
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))
    if seed % 5 == 0:
        preds[:] = preds[0]                                     # a constant prediction
    assert METRICS["macro_f1"](preds, labels) == pytest.approx(
        sk(f1_score, labels, preds, average="macro", zero_division=0))
    assert METRICS["micro_f1"](preds, labels) == pytest.approx(
        sk(f1_score, labels, preds, average="micro", zero_division=0))
    assert METRICS["matthews"](preds, labels) == pytest.approx(sk(matthews_corrcoef, labels, preds))
    assert METRICS["accuracy"](preds, labels) == pytest.approx(accuracy_score(labels, preds))


@pytest.mark.parametrize("seed", range(40))
def test_binary_scores_auroc_and_thresholded_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    labels = rng.integers(0, 2, n)
    scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    if seed % 3 == 0:
        scores = np.round(scores, 1)                            # ties
    classes = (scores > 0.5).astype(int)
    expected_auc = sk(roc_auc_score, labels, scores) if len(set(labels)) == 2 else 0.5
    assert METRICS["auroc"](scores, labels) == pytest.approx(expected_auc)
    assert METRICS["f1"](scores, labels) == pytest.approx(sk(f1_score, labels, classes, zero_division=0))
    assert METRICS["accuracy"](scores, labels) == pytest.approx(accuracy_score(labels, classes))
    assert METRICS["matthews_correlation"](scores, labels) == pytest.approx(sk(matthews_corrcoef, labels, classes))
    assert METRICS["macro_f1"](scores, labels) == pytest.approx(
        sk(f1_score, labels, classes, average="macro", zero_division=0))


def test_auroc_by_hand_and_its_edges() -> None:
    # positives score 0.9, 0.4; negatives 0.5, 0.1, 0.4: pairs won 1+1+1, 0+0+1 (0.4 vs 0.5 lost), 0.4 vs 0.4 half
    assert METRICS["auroc"](np.array([0.9, 0.4, 0.5, 0.1, 0.4]), np.array([1, 1, 0, 0, 0])) == pytest.approx(4.5 / 6)
    assert METRICS["auroc"](np.array([0.2, 0.3]), np.array([1, 1])) == 0.5       # undefined: chance, not nan
    assert METRICS["auroc"](np.array([1, 0, 1]), np.array([1, 0, 0])) == pytest.approx(0.75)  # classes as scores
    with pytest.raises(ValueError, match="binary labels"):
        METRICS["auroc"](np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))


def test_auroc_ranks_confident_rows_by_their_margin_where_probabilities_tie():
    """Logit margins 40 and 50: both probabilities of class 1 round to 1.0 in float64, so ranking them ties the
    two rows (AUROC 0.5 on this pair); the stored log-probabilities rank them by their margin (1.0)."""
    logits = np.array([[0.0, 50.0], [0.0, 40.0], [3.0, 0.0]], dtype=np.float32)
    labels = np.array([1, 0, 0])
    assert special.expit(40.0) == special.expit(50.0) == 1.0                        # where the old scores tied
    predictions = predictions_from_logits(BINARY_AUROC, logits)
    assert compute_metrics(BINARY_AUROC, predictions, labels)["auroc"] == 1.0
    assert roc_auc_score(labels, logits[:, 1] - logits[:, 0]) == 1.0               # scikit-learn on the margins
    # the class metrics read the same stored pairs (through JSON, as rows keep them): class 1 for both margins
    stored = np.asarray(json.loads(json.dumps(predictions.tolist())))
    assert METRICS["accuracy"](stored, labels) == pytest.approx(2 / 3) and METRICS["f1"](stored, labels) == 2 / 3
    assert bootstrap_ci("auroc", stored, labels, n_resamples=50).low >= 0.5


@pytest.mark.parametrize("seed", range(40))
def test_multi_label_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 60)), int(rng.integers(2, 7))
    labels = (rng.random((n, k)) < 0.3).astype(int)
    preds = np.where(rng.random((n, k)) < 0.7, labels, 1 - labels)
    if seed % 4 == 0:
        labels[:, 0] = preds[:, 0] = 0                          # a label nobody has: F1 0 (zero_division=0)
    for average in ("micro", "macro"):
        assert METRICS[f"{average}_f1"](preds, labels) == pytest.approx(
            sk(f1_score, labels, preds, average=average, zero_division=0))
    assert METRICS["accuracy"](preds, labels) == pytest.approx(accuracy_score(labels, preds))   # exact match
    assert METRICS["macro_f1"](preds, labels.astype(np.float32)) == METRICS["macro_f1"](preds, labels)


@pytest.mark.parametrize("seed", range(10))
def test_correlations_and_aliases_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 200)
    preds = labels + rng.normal(0, 1.5, 200)
    assert METRICS["pearson"](preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
    assert METRICS["spearman"](preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
    assert METRICS["spearman"] is METRICS["spearmanr"] and METRICS["matthews"] is METRICS["matthews_correlation"]


def test_every_metric_is_a_plain_float_of_every_fitting_kind() -> None:
    rng = np.random.default_rng(0)
    cases = {"binary": (rng.random(50), rng.integers(0, 2, 50)),
             "single_label": (rng.integers(0, 3, 50), rng.integers(0, 3, 50)),
             "multi_label": (rng.integers(0, 2, (50, 4)), rng.integers(0, 2, (50, 4))),
             "regression": (rng.normal(size=50), rng.normal(size=50))}
    sizes = {"binary": 2, "single_label": 3, "multi_label": 4, "regression": 1}
    for case, (preds, labels) in cases.items():
        kind = "single_label" if case == "binary" else case
        for name, fn in METRICS.items():
            if metric_problem(name, kind, sizes[case]) is None:
                value = fn(preds, labels)
                assert type(value) is float and math.isfinite(value), (case, name)


def test_which_metric_fits_which_kind() -> None:
    assert default_metrics("single_label", 2) == ("accuracy", "f1")
    assert default_metrics("single_label", 5) == ("accuracy", "macro_f1")
    assert default_metrics("multi_label", 5) == ("micro_f1", "macro_f1")
    assert default_metrics("regression", 1) == ("pearson", "spearman")
    assert metric_problem("auroc", "single_label", 2) is None and metric_problem("f1", "single_label", 2) is None
    assert "not a single-label task with 3 labels" in metric_problem("f1", "single_label", 3)
    assert "valid here: accuracy, macro_f1, micro_f1" in metric_problem("matthews", "multi_label", 3)
    assert "not a regression task" in metric_problem("macro_f1", "regression", 1)
    assert metric_problem("rmse", "regression", 1).startswith("unknown metric 'rmse'; valid: accuracy")
    for spec in TASKS.values():                         # the GLUE tasks' own metrics fit them
        assert all(metric_problem(name, spec.kind, spec.num_labels) is None for name in spec.metric_names)


# ----------------------------------------------------------------------------------------------- predictions


def test_predictions_by_kind() -> None:
    logits = np.array([[0.3, -1.2, 2.0, 0.0], [-0.1, 0.2, -3.0, 1e-6]], dtype=np.float32)
    np.testing.assert_array_equal(predictions_from_logits(TOPICS, logits), [[1, 0, 1, 0], [0, 1, 0, 1]])
    assert (special.expit(logits) > 0.5).astype(int).tolist() == predictions_from_logits(TOPICS, logits).tolist()
    binary = np.array([[0.1, 2.0], [3.0, -1.0], [0.5, 0.5], [-800.0, 900.0], [900.0, -800.0]], dtype=np.float32)
    log_probs = predictions_from_logits(BINARY_AUROC, binary)
    assert wants_scores(BINARY_AUROC) and not wants_scores(TASKS["sst2"]) and not wants_scores(TOPICS)
    assert log_probs.shape == (5, 2) and np.isfinite(log_probs).all()
    np.testing.assert_allclose(log_probs, special.log_softmax(binary.astype(np.float64), axis=1))
    classes = predictions_from_logits(TASKS["sst2"], binary)                                         # argmax
    assert METRICS["accuracy"](log_probs, classes) == 1.0 and METRICS["f1"](log_probs, classes) == 1.0
    assert predictions_from_logits(SCORES, np.array([[1.5], [2.5]])).tolist() == [1.5, 2.5]
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        predictions_from_logits(TOPICS, binary)


def test_compute_metrics_of_a_multi_label_task() -> None:
    labels = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    preds = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    # micro: tp 2, fp 1, fn 1 -> 4/6; macro over a, b, c, d: 1, 1, 0, 0; exact match: row 3 only
    assert compute_metrics(TOPICS, preds, labels) == pytest.approx({"micro_f1": 2 / 3, "macro_f1": 0.5,
                                                                     "accuracy": 1 / 3})


# ----------------------------------------------------------------------------------------------- bootstrap


def case(kind: str, n: int = 600, seed: int = 0):
    """(worse predictions, better predictions, labels, metric) of one task kind."""
    rng = np.random.default_rng(seed)
    if kind == "auroc":
        labels = rng.integers(0, 2, n)
        return (np.clip(labels * 0.15 + rng.random(n) * 0.85, 0, 1), np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1),
                labels, "auroc")
    if kind == "macro_f1":
        labels = rng.integers(0, 4, n)
        noisy = lambda p: np.where(rng.random(n) < p, labels, rng.integers(0, 4, n))  # noqa: E731
        return noisy(0.5), noisy(0.9), labels, "macro_f1"
    if kind == "multi_label":
        labels = (rng.random((n, 5)) < 0.3).astype(int)
        flip = lambda p: np.where(rng.random((n, 5)) < p, 1 - labels, labels)  # noqa: E731
        return flip(0.3), flip(0.05), labels, "micro_f1"
    labels = rng.uniform(0, 5, n)
    return labels + rng.normal(0, 3, n), labels + rng.normal(0, 0.5, n), labels, "spearman"


@pytest.mark.parametrize("kind", ["auroc", "macro_f1", "multi_label", "spearman"])
def test_bootstrap_and_paired_delta_for_every_kind(kind: str) -> None:
    worse, better, labels, metric = case(kind)
    fn = METRICS[metric]
    interval = bootstrap_ci(metric, better, labels, n_resamples=300, seed=1)
    assert interval.low < fn(better, labels) < interval.high
    assert bootstrap_ci(metric, better, labels, n_resamples=300, seed=1) == interval
    # rows are resampled (a multi-label row keeps its labels together): the statistic by hand, same draws
    rng = np.random.default_rng(1)
    draws = [fn(better[idx], labels[idx]) for idx in (rng.integers(0, len(labels), len(labels)) for _ in range(300))]
    assert interval.as_list() == pytest.approx(np.percentile(draws, [2.5, 97.5]).tolist())
    delta, paired = paired_bootstrap_delta(metric, worse, better, labels, n_resamples=300)
    assert delta == pytest.approx(fn(better, labels) - fn(worse, labels)) and delta > 0
    assert 0 < paired.low < delta < paired.high
    zero, same = paired_bootstrap_delta(metric, better, better.copy(), labels, n_resamples=100)
    assert zero == 0.0 and same.as_list() == [0.0, 0.0]


def test_new_metrics_are_fast_enough_for_the_bootstrap() -> None:
    for kind in ("auroc", "macro_f1", "multi_label"):
        worse, better, labels, metric = case(kind, n=1000)
        start = time.perf_counter()
        paired_bootstrap_delta(metric, worse, better, labels, n_resamples=1000)
        assert time.perf_counter() - start < 3.0, kind


# ----------------------------------------------------------------------------------------------- stored rows


def stored(pipeline: str, predictions: np.ndarray, labels: np.ndarray, metric: str) -> dict:
    """A result row's scoring fields as results.jsonl holds them (through JSON)."""
    row = {"task": "t", "pipeline": pipeline, "status": "ok", "metric_name": metric,
           "metric": METRICS[metric](predictions, labels), "predictions": predictions.tolist(),
           "labels": labels.tolist(), "seeds": {"bootstrap": 0}}
    return json.loads(json.dumps(row))


@pytest.mark.parametrize("kind", ["auroc", "macro_f1", "multi_label", "spearman"])
def test_report_re_scores_stored_rows_of_every_kind(kind: str) -> None:
    worse, better, labels, metric = case(kind, n=300)
    baseline, row = stored("baseline", better, labels, metric), stored("small", worse, labels, metric)
    delta = paired_delta(row, baseline)
    expected, interval = paired_bootstrap_delta(metric, better, worse, labels)
    assert delta.value == pytest.approx(expected) and delta.low == pytest.approx(interval.low)
    assert delta.significant and delta.value < 0


def test_constant_prediction_baselines_of_the_new_metrics() -> None:
    assert constant_score("auroc", [0, 1, 1]) == (0.5, "a constant score ranks no row above another")
    assert constant_score("spearman", None)[0] == 0.0 and constant_score("matthews", None)[0] == 0.0
    labels = [0] * 60 + [1] * 30 + [2] * 10
    assert constant_score("macro_f1", labels) == (pytest.approx(f1_score(labels, [0] * 100, average="macro")),
                                                  'always "0"')
    multi = [[1, 0, 0]] * 6 + [[1, 1, 0]] * 3 + [[0, 0, 1]]
    score, described = constant_score("micro_f1", multi)
    everything = f1_score(np.array(multi), np.ones((10, 3), int), average="micro")
    majority = f1_score(np.array(multi), np.array([[1, 0, 0]] * 10), average="micro")
    assert score == pytest.approx(max(everything, majority)) and described.startswith("always ")
