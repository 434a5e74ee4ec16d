"""Accuracy through the session that is timed: the task's official metrics on its evaluation split(s), the
headline with a percentile-bootstrap interval, and the logits (for parity).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compbench.backends.base import Session
from compbench.config.measure import MeasureConfig
from compbench.tasks.data import TaskData
from compbench.tasks.encoding import encode_rows, predict_logits
from compbench.tasks.metrics import bootstrap_ci, compute_metrics, positive_label, predictions_from_logits


def evaluate_session(
    session: Session, tokenizer, data: TaskData, max_seq_len: int, config: MeasureConfig, seed: int
) -> tuple[dict, np.ndarray]:
    """The task's official metrics on its evaluation split(s), through ``session``, and the
    primary split's logits.

    The first metric of the primary split is the headline (``metric``) with a 95%
    bootstrap interval; further splits (MNLI mismatched) are added as ``split/metric``; a task scored by ``f1``
    says which label it counts as positive (``positive_label``). ``predictions`` are
    what the metrics score (``predictions_from_logits``): class ids, a binary task's log-probabilities of
    both classes where it is scored by auroc, a multi-hot list per row (multi-label), or numbers (regression).
    """
    task = data.task
    result: dict = {"metrics": {}}
    if positive_label(task) is not None:      # binary F1 means nothing without the label it counts as positive
        result["positive_label"] = positive_label(task)
    primary_logits = np.empty(0)
    for split_index, (split, rows) in enumerate(data.eval.items()):
        logits, labels = split_logits(session, tokenizer, data, rows, max_seq_len, config.eval_batch_size)
        if task.is_multi_label:
            labels = labels.astype(np.int64)     # 0/1 per label (float only for the loss): rows store ints
        predictions = predictions_from_logits(task, logits)
        scores = compute_metrics(task, predictions, labels)
        prefix = "" if split_index == 0 else f"{split}/"
        result["metrics"].update({prefix + name: value for name, value in scores.items()})
        if split_index == 0:
            name = task.metric_names[0]
            interval = bootstrap_ci(name, predictions, labels, n_resamples=config.bootstrap_resamples, seed=seed)
            result.update(
                metric_name=name,
                metric=scores[name],
                metric_ci95=interval.as_list(),
                eval_split=split,
                eval_rows=int(len(labels)),
                predictions=predictions.tolist(),
                labels=np.asarray(labels).tolist(),
            )
            primary_logits = logits
    return result, primary_logits


def split_logits(session: Session, tokenizer, data: TaskData, rows: pd.DataFrame, max_seq_len: int, batch_size: int):
    """Logits of every row (in order) and the labels."""
    encoded = encode_rows(tokenizer, data.task, rows, max_seq_len)
    return predict_logits(session.run, tokenizer, encoded, batch_size), encoded.labels
