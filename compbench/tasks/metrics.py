"""Official GLUE metrics and percentile-bootstrap confidence intervals.

The classification metrics are computed from confusion counts with numpy, using the same
formulas as scikit-learn's ``accuracy_score``, ``f1_score`` (binary, ``zero_division=0``) and
``matthews_corrcoef`` (the tests check them against scikit-learn); that keeps one call in the
microseconds, which matters for 1000 bootstrap resamples, and free of warnings on degenerate
resamples. The correlations use scipy. Every metric returns a plain float and never nan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from compbench.tasks.glue import TaskSpec

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as 1-D arrays of equal, non-zero length."""
    preds, labs = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if preds.shape != labs.shape:
        raise ValueError(f"{preds.size} predictions but {labs.size} labels")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, labs


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the label."""
    preds, labs = _as_pair(predictions, labels)
    return float(np.mean(preds == labs))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1: 2tp / (2tp + fp + fn); 0.0 when there is no positive
    on either side (scikit-learn's ``zero_division=0``, as in the official GLUE scoring)."""
    preds, labs = _as_pair(predictions, labels)
    pred_pos, true_pos = preds == 1, labs == 1
    tp = int(np.count_nonzero(pred_pos & true_pos))
    fp = int(np.count_nonzero(pred_pos & ~true_pos))
    fn = int(np.count_nonzero(~pred_pos & true_pos))
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form, as scikit-learn); 0.0 when undefined, i.e. when
    the labels or the predictions hold a single class."""
    preds, labs = _as_pair(predictions, labels)
    preds, labs = preds.astype(np.int64), labs.astype(np.int64)
    if preds.min() < 0 or labs.min() < 0:
        raise ValueError("class ids must be non-negative")
    k = int(max(preds.max(), labs.max())) + 1
    confusion = np.bincount(labs * k + preds, minlength=k * k).reshape(k, k).astype(np.float64)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - true_sum @ pred_sum
    cov_pp = n * n - pred_sum @ pred_sum
    cov_tt = n * n - true_sum @ true_sum
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; 0.0 (not nan) when either side is constant, where it is undefined."""
    preds, labs = _as_pair(predictions, labels)
    if _is_constant(preds) or _is_constant(labs):
        return 0.0
    # imported here, not at the top: scipy.stats takes 0.7 s to import, which reports without a correlation skip
    from scipy import stats

    return float(stats.pearsonr(preds.astype(np.float64), labs.astype(np.float64))[0])


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation; 0.0 (not nan) when either side is constant."""
    preds, labs = _as_pair(predictions, labels)
    if _is_constant(preds) or _is_constant(labs):
        return 0.0
    from scipy import stats

    return float(stats.spearmanr(preds, labs)[0])


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearmanr,
}


def get_metric(name: str) -> MetricFn:
    """The metric function called ``name``; ValueError listing the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}") from None


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification; the single output as float64 for regression."""
    values = np.asarray(logits)
    if task.is_regression:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"{task.name} expects one output per row, got shape {values.shape}")
        return values.astype(np.float64)
    if values.ndim != 2 or values.shape[1] != task.num_labels:
        raise ValueError(f"{task.name} expects logits of shape (n, {task.num_labels}), got {values.shape}")
    return values.argmax(axis=1)


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every official metric of ``task``, primary first."""
    return {name: get_metric(name)(predictions, labels) for name in task.metric_names}


@dataclass(frozen=True)
class Interval:
    """A confidence interval."""

    low: float
    high: float

    def as_list(self) -> list[float]:
        """``[low, high]``, e.g. for JSON."""
        return [self.low, self.high]


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _resample_statistics(statistic: Callable[[np.ndarray], float], n_rows: int, n_resamples: int,
                         seed: int) -> np.ndarray:
    """``statistic(indices)`` over ``n_resamples`` seeded draws of ``n_rows`` row indices."""
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, n_rows, size=n_rows)) for _ in range(n_resamples)])


def _percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """The central ``confidence`` range of the bootstrap distribution."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high))


def bootstrap_ci(metric: str, predictions: np.ndarray, labels: np.ndarray, *, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of ``metric``, resampling rows with replacement.

    Deterministic for a given seed; a metric that is the same on every resample (e.g. all
    predictions correct) gives a zero-width interval.
    """
    _check_bootstrap_args(n_resamples, confidence)
    fn = get_metric(metric)
    preds, labs = _as_pair(predictions, labels)
    values = _resample_statistics(lambda idx: fn(preds[idx], labs[idx]), preds.size, n_resamples, seed)
    return _percentile_interval(values, confidence)


def paired_bootstrap_delta(metric: str, predictions_a: np.ndarray, predictions_b: np.ndarray,
                           labels: np.ndarray, *, n_resamples: int = 1000, confidence: float = 0.95,
                           seed: int = 0) -> tuple[float, Interval]:
    """``metric(b) - metric(a)`` on all rows, and its paired percentile-bootstrap interval.

    Each resample draws one set of rows and scores both systems on it, so the interval
    reflects only how the two differ on the same examples. Identical predictions give
    ``(0.0, Interval(0.0, 0.0))``.
    """
    _check_bootstrap_args(n_resamples, confidence)
    fn = get_metric(metric)
    preds_a, labs = _as_pair(predictions_a, labels)
    preds_b, _ = _as_pair(predictions_b, labels)
    delta = fn(preds_b, labs) - fn(preds_a, labs)
    values = _resample_statistics(
        lambda idx: fn(preds_b[idx], labs[idx]) - fn(preds_a[idx], labs[idx]),
        labs.size, n_resamples, seed,
    )
    return float(delta), _percentile_interval(values, confidence)
