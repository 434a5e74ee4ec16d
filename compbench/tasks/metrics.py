"""Task metrics and percentile-bootstrap confidence intervals.

Names: ``accuracy``, ``f1`` (binary), ``macro_f1``, ``micro_f1``, ``matthews`` (alias
``matthews_correlation``, GLUE's name), ``pearson``, ``spearman`` (alias ``spearmanr``) and ``auroc``
(binary). Each is scikit-learn's (or scipy's) definition -- ``accuracy_score``, ``f1_score`` with
``zero_division=0`` (``average="binary"``, ``"macro"``, ``"micro"``), ``matthews_corrcoef``,
``roc_auc_score``, ``pearsonr``, ``spearmanr`` -- computed from confusion counts and ranks with numpy,
so one call takes microseconds, which matters for 1000 bootstrap resamples (scikit-learn's own
functions take milliseconds a call), and never warns on a degenerate resample; the tests check every
one against scikit-learn/scipy. Every metric returns a plain float and never nan.

What predictions look like, by task kind (``predictions_from_logits``):

* single-label: class ids (argmax), 1-D ints; for a binary task whose metrics include ``auroc``, the
  log-probabilities of classes 0 and 1 instead (floats, one pair per row): ``auroc`` ranks rows by their
  difference (the logit margin; a probability of class 1 rounds to exactly 1.0 in float64 beyond a margin of
  about 37, and rows beyond it would tie), and every class metric takes the likelier class (argmax), so one stored
  ``predictions`` list serves every metric and the paired bootstrap. Rows of runs before stored the probability of
  class 1 (1-D floats in [0, 1]): the class metrics threshold it at 0.5 and ``auroc`` ranks it;
* multi-label: a multi-hot matrix (n, labels) of ints, a label predicted where its sigmoid > 0.5
  (logit > 0); ``accuracy`` is exact-match (subset) accuracy, F1s are over labels; the bootstrap
  resamples rows;
* regression: the single output, 1-D floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from compbench.common.registry import unknown_name_message
from compbench.tasks.glue import TaskSpec

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _log_probability_pairs(preds: np.ndarray, labs: np.ndarray) -> bool:
    """Whether ``preds`` are a binary task's log-probabilities of classes 0 and 1, a pair per row (multi-label
    predictions are 0/1 ints with labels of the same shape)."""
    return preds.ndim == 2 and preds.shape[1] == 2 and preds.dtype.kind == "f" and labs.ndim == 1


def _as_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as arrays of equal, non-zero length: 1-D, or 2-D (rows, labels) for multi-label, or a binary
    task's log-probability pairs (rows, 2) with 1-D labels."""
    preds, labs = np.asarray(predictions), np.asarray(labels)
    if _log_probability_pairs(preds, labs):
        if len(preds) != len(labs):
            raise ValueError(f"{len(preds)} predictions but {labs.size} labels")
    elif preds.ndim == 2 and preds.shape[1] > 1 or labs.ndim == 2 and labs.shape[1] > 1:
        if preds.shape != labs.shape:
            raise ValueError(f"predictions of shape {preds.shape} but labels of shape {labs.shape}")
    else:
        preds, labs = preds.ravel(), labs.ravel()
        if preds.shape != labs.shape:
            raise ValueError(f"{preds.size} predictions but {labs.size} labels")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, labs


def _classes(preds: np.ndarray, labs: np.ndarray) -> np.ndarray:
    """Class ids of predictions: a binary task's log-probability pairs give the likelier class (a tie is class 0,
    as argmax); 1-D float predictions within [0, 1] are the probability of class 1 that rows of runs before stored,
    thresholded at 0.5 (the same class); anything else is ids already."""
    if _log_probability_pairs(preds, labs):
        return (preds[:, 1] > preds[:, 0]).astype(np.int64)
    if preds.dtype.kind == "f" and preds.min() >= 0.0 and preds.max() <= 1.0:
        return (preds > 0.5).astype(np.int64)
    return preds


def _one_dimensional(name: str, preds: np.ndarray) -> None:
    if preds.ndim != 1:
        raise ValueError(f"{name} scores one value per row, not multi-label predictions of shape {preds.shape}")


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the label; multi-label: of rows whose every label is right."""
    preds, labs = _as_pair(predictions, labels)
    correct = _classes(preds, labs) == labs
    return float(np.mean(correct if correct.ndim == 1 else correct.all(axis=1)))


def _f1_of_counts(tp, fp, fn):
    """2tp / (2tp + fp + fn), 0 where the denominator is 0 (elementwise for arrays)."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64),
                     where=denominator > 0)


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1: 2tp / (2tp + fp + fn); 0.0 when there is no positive
    on either side (scikit-learn's ``zero_division=0``, as in the official GLUE scoring)."""
    preds, labs = _as_pair(predictions, labels)
    pred_pos, true_pos = _classes(preds, labs) == 1, labs == 1
    tp = int(np.count_nonzero(pred_pos & true_pos))
    fp = int(np.count_nonzero(pred_pos & ~true_pos))
    fn = int(np.count_nonzero(~pred_pos & true_pos))
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def positive_label(task: TaskSpec) -> dict | None:
    """Which label ``f1`` counts as positive, for a task scored by it: class 1 (``id``) and its ``name`` (None where
    the task names no labels); None for a task without ``f1``."""
    if "f1" not in task.metric_names:
        return None
    return {"id": 1, "name": task.label_names[1] if task.label_names else None}


def _confusion(preds: np.ndarray, labs: np.ndarray) -> np.ndarray:
    """Confusion counts [true, predicted] of non-negative class ids (k x k, k = largest id + 1)."""
    preds, labs = preds.astype(np.int64), labs.astype(np.int64)
    if preds.min() < 0 or labs.min() < 0:
        raise ValueError("class ids must be non-negative")
    k = int(max(preds.max(), labs.max())) + 1
    return np.bincount(labs * k + preds, minlength=k * k).reshape(k, k)


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 (scikit-learn ``average="macro"``, ``zero_division=0``): over the
    classes present in the labels or the predictions (single-label), or over every label (multi-label,
    where a label with no positive on either side scores 0)."""
    preds, labs = _as_pair(predictions, labels)
    preds = _classes(preds, labs)
    if preds.ndim == 2:
        pred_pos, true_pos = preds == 1, labs == 1
        tp = np.count_nonzero(pred_pos & true_pos, axis=0)
        fp = np.count_nonzero(pred_pos & ~true_pos, axis=0)
        fn = np.count_nonzero(~pred_pos & true_pos, axis=0)
        return float(np.mean(_f1_of_counts(tp, fp, fn)))
    confusion = _confusion(preds, labs)
    tp = np.diag(confusion)
    fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    return float(np.mean(_f1_of_counts(tp[present], fp[present], fn[present])))


def micro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the pooled counts (scikit-learn ``average="micro"``, ``zero_division=0``): for single-label rows
    this is accuracy; for multi-label, 2tp / (2tp + fp + fn) over every (row, label)."""
    preds, labs = _as_pair(predictions, labels)
    preds = _classes(preds, labs)
    if preds.ndim == 1:
        return float(np.mean(preds == labs))
    pred_pos, true_pos = preds == 1, labs == 1
    tp = int(np.count_nonzero(pred_pos & true_pos))
    fp = int(np.count_nonzero(pred_pos & ~true_pos))
    fn = int(np.count_nonzero(~pred_pos & true_pos))
    return float(_f1_of_counts(np.int64(tp), np.int64(fp), np.int64(fn)))


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form, as scikit-learn); 0.0 when undefined, i.e. when
    the labels or the predictions hold a single class."""
    preds, labs = _as_pair(predictions, labels)
    preds = _classes(preds, labs)
    _one_dimensional("matthews", preds)
    confusion = _confusion(preds, labs).astype(np.float64)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - true_sum @ pred_sum
    cov_pp = n * n - pred_sum @ pred_sum
    cov_tt = n * n - true_sum @ true_sum
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy's ``rankdata(method="average")``)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def auroc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of a binary task (scikit-learn ``roc_auc_score``): the chance that a
    random positive row scores above a random negative one, ties counting half. Predictions are
    scores: log-probability pairs rank by their difference, the logit margin, which never saturates (the
    probability of class 1 of rows of runs before, and class ids, rank as they are, as scikit-learn takes them).
    0.5 (chance) when the labels hold a single class, where it is undefined."""
    preds, labs = _as_pair(predictions, labels)
    if _log_probability_pairs(preds, labs):
        preds = preds[:, 1] - preds[:, 0]
    _one_dimensional("auroc", preds)
    positive = labs == 1
    if not np.all(positive | (labs == 0)):
        raise ValueError(f"auroc is for binary labels 0/1, got {np.unique(labs)[:5].tolist()}")
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = _average_ranks(preds.astype(np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; 0.0 (not nan) when either side is constant, where it is undefined."""
    preds, labs = _as_pair(predictions, labels)
    _one_dimensional("pearson", preds)
    if _is_constant(preds) or _is_constant(labs):
        return 0.0
    # imported here, not at the top: scipy.stats takes 0.7 s to import, which reports without a correlation skip
    from scipy import stats

    return float(stats.pearsonr(preds.astype(np.float64), labs.astype(np.float64))[0])


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation; 0.0 (not nan) when either side is constant."""
    preds, labs = _as_pair(predictions, labels)
    _one_dimensional("spearman", preds)
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
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "matthews": matthews_correlation,
    "spearman": spearmanr,
    "auroc": auroc,
}


# Which task kinds each metric scores ("binary": single-label with two classes).
METRIC_KINDS: dict[str, tuple[str, ...]] = {
    "accuracy": ("single_label", "multi_label"),
    "f1": ("binary",),
    "matthews_correlation": ("single_label",),
    "pearson": ("regression",),
    "spearmanr": ("regression",),
    "macro_f1": ("single_label", "multi_label"),
    "micro_f1": ("single_label", "multi_label"),
    "matthews": ("single_label",),
    "spearman": ("regression",),
    "auroc": ("binary",),
}

_FOR_KIND = {"binary": "binary classification (2 classes)", "single_label": "single-label classification",
             "multi_label": "multi-label classification", "regression": "regression"}


def default_metrics(kind: str, num_labels: int) -> tuple[str, ...]:
    """The metrics a task of ``kind`` gets when it names none (the first is the headline)."""
    if kind == "regression":
        return ("pearson", "spearman")
    if kind == "multi_label":
        return ("micro_f1", "macro_f1")
    return ("accuracy", "f1") if num_labels == 2 else ("accuracy", "macro_f1")


def metric_fits(name: str, kind: str, num_labels: int) -> bool:
    """Whether the known metric ``name`` can score a ``kind`` task with ``num_labels`` labels."""
    kinds = METRIC_KINDS[name]
    return kind in kinds or ("binary" in kinds and kind == "single_label" and num_labels == 2)


def metric_problem(name: str, kind: str, num_labels: int) -> str | None:
    """Why metric ``name`` cannot score a ``kind`` task with ``num_labels`` labels, or None when it can."""
    if name not in METRICS:
        return unknown_name_message("metric", name, list(METRICS))
    if metric_fits(name, kind, num_labels):
        return None
    fitting = [m for m in METRICS if metric_fits(m, kind, num_labels)]
    what = "regression task" if kind == "regression" else f"{kind.replace('_', '-')} task with {num_labels} labels"
    return (f"metric {name!r} is for {' or '.join(_FOR_KIND[k] for k in METRIC_KINDS[name])}, not a {what}; "
            f"valid here: {', '.join(fitting)}")


def get_metric(name: str) -> MetricFn:
    """The metric function called ``name``; ValueError listing the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}") from None


def wants_scores(task: TaskSpec) -> bool:
    """Whether ``task``'s predictions are scores (log-probabilities of both classes) rather than class ids: a
    binary task scored by ``auroc``, which ranks rows by score."""
    return task.is_binary and "auroc" in task.metric_names


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """log softmax of each row of ``logits`` in float64, without overflow."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """What the task's metrics score (see the module docstring): class ids (argmax), or the log-probabilities of
    both classes for a binary task scored by ``auroc``; a multi-hot int matrix (logit > 0) for multi-label; the
    single output as float64 for regression."""
    values = np.asarray(logits)
    if task.is_regression:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"{task.name} expects one output per row, got shape {values.shape}")
        return values.astype(np.float64)
    if values.ndim != 2 or values.shape[1] != task.num_labels:
        raise ValueError(f"{task.name} expects logits of shape (n, {task.num_labels}), got {values.shape}")
    if task.is_multi_label:
        return (values > 0).astype(np.int64)
    if wants_scores(task):
        return log_probabilities(values)
    return values.argmax(axis=1)


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of ``task``, primary first."""
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
    values = _resample_statistics(lambda idx: fn(preds[idx], labs[idx]), len(labs), n_resamples, seed)
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
    if preds_a.shape != preds_b.shape:
        raise ValueError(f"predictions of shapes {preds_a.shape} and {preds_b.shape} cannot be paired")
    delta = fn(preds_b, labs) - fn(preds_a, labs)
    values = _resample_statistics(
        lambda idx: fn(preds_b[idx], labs[idx]) - fn(preds_a[idx], labs[idx]),
        len(labs), n_resamples, seed,
    )
    return float(delta), _percentile_interval(values, confidence)


# ---- Perplexity and bits per byte: ratios over units (documents or windows), lower is better --------------------

# Metrics where a smaller value is the better one (every other metric here is better when higher).
LOWER_IS_BETTER = frozenset({"perplexity", "nll", "bits_per_byte"})

# A language model's corpus metrics, each a function of a ratio of per-unit sums: NLL (nats) over scored tokens
# (perplexity: exp of it), or NLL over the UTF-8 bytes of the scored tokens' text (bits per byte: in bits).
NLL_RATIOS: dict[str, Callable[[float], float]] = {
    "perplexity": np.exp,
    "bits_per_byte": lambda nats_per_byte: nats_per_byte / np.log(2.0),
}


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (False for perplexity, NLL and bits per byte)."""
    return name not in LOWER_IS_BETTER


def _nll_units(nll_sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit NLL sums and counts (tokens or bytes) as float64, units with no scored token dropped (they add
    nothing)."""
    sums, counts = np.asarray(nll_sums, dtype=np.float64).ravel(), np.asarray(counts, dtype=np.float64).ravel()
    if sums.shape != counts.shape:
        raise ValueError(f"{sums.size} NLL sums but {counts.size} token counts")
    if np.any(counts < 0) or not np.all(np.isfinite(sums)):
        raise ValueError("token counts must be non-negative and NLL sums finite")
    keep = counts > 0
    if not keep.any():
        raise ValueError("no scored tokens: perplexity is undefined")
    return sums[keep], counts[keep]


def nll_ratio_of(metric: str, nll_sums: np.ndarray, counts: np.ndarray) -> float:
    """``metric`` (``NLL_RATIOS``) of units given by their summed negative log-likelihood (nats) and their scored
    tokens (perplexity) or bytes (bits per byte)."""
    sums, counts = _nll_units(nll_sums, counts)
    return float(NLL_RATIOS[metric](sums.sum() / counts.sum()))


def perplexity_of(nll_sums: np.ndarray, token_counts: np.ndarray) -> float:
    """Token-weighted perplexity exp(sum of NLL / number of tokens) of units (documents or windows) given by
    their summed negative log-likelihood (nats) and token counts."""
    return nll_ratio_of("perplexity", nll_sums, token_counts)


def bootstrap_nll_ratio_ci(metric: str, nll_sums: np.ndarray, counts: np.ndarray, *, n_resamples: int = 1000,
                           confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of ``metric`` (``NLL_RATIOS``), resampling units (documents or windows: tokens
    of one unit are not independent) with replacement; units without a scored token are left out."""
    _check_bootstrap_args(n_resamples, confidence)
    sums, counts = _nll_units(nll_sums, counts)
    transform = NLL_RATIOS[metric]
    values = _resample_statistics(lambda idx: float(transform(sums[idx].sum() / counts[idx].sum())),
                                  len(sums), n_resamples, seed)
    return _percentile_interval(values, confidence)


def bootstrap_perplexity_ci(nll_sums: np.ndarray, token_counts: np.ndarray, **kwargs) -> Interval:
    """:func:`bootstrap_nll_ratio_ci` of the token-weighted perplexity."""
    return bootstrap_nll_ratio_ci("perplexity", nll_sums, token_counts, **kwargs)


def paired_bootstrap_nll_ratio_delta(metric: str, nll_sums_a: np.ndarray, counts_a: np.ndarray,
                                     nll_sums_b: np.ndarray, counts_b: np.ndarray, *, n_resamples: int = 1000,
                                     confidence: float = 0.95, seed: int = 0) -> tuple[float, Interval]:
    """``metric(b) - metric(a)`` (``NLL_RATIOS``) over the same units (documents or windows, in the same order), each
    model with its own counts (two tokenizers score a document in different tokens and bytes), and its paired
    percentile-bootstrap interval: each resample draws one set of units and scores both models on it. A unit counts
    where both models scored tokens in it; a positive delta means b is worse."""
    _check_bootstrap_args(n_resamples, confidence)
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (nll_sums_a, counts_a, nll_sums_b, counts_b)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"units cannot be paired: sizes {[a.size for a in arrays]}")
    sums_a, counts_a, sums_b, counts_b = arrays
    keep = (counts_a > 0) & (counts_b > 0)
    _nll_units(sums_a[keep], counts_a[keep])
    _nll_units(sums_b[keep], counts_b[keep])
    sums_a, counts_a, sums_b, counts_b = (a[keep] for a in arrays)
    transform = NLL_RATIOS[metric]

    def delta(idx: np.ndarray) -> float:
        return float(transform(sums_b[idx].sum() / counts_b[idx].sum())
                     - transform(sums_a[idx].sum() / counts_a[idx].sum()))

    everything = np.arange(len(sums_a))
    values = _resample_statistics(delta, len(sums_a), n_resamples, seed)
    return delta(everything), _percentile_interval(values, confidence)


def paired_bootstrap_perplexity_delta(nll_sums_a: np.ndarray, token_counts_a: np.ndarray, nll_sums_b: np.ndarray,
                                      token_counts_b: np.ndarray, **kwargs) -> tuple[float, Interval]:
    """:func:`paired_bootstrap_nll_ratio_delta` of the perplexity."""
    return paired_bootstrap_nll_ratio_delta("perplexity", nll_sums_a, token_counts_a, nll_sums_b, token_counts_b,
                                            **kwargs)
