"""When a run's numbers cannot be trusted, in plain words: an evaluation set too small for its intervals
to mean anything, a teacher that learned nothing (its interval holds what a constant prediction scores), and
timings taken while other processes kept the machine busy.

``report.md`` opens with these lines ("Read this first") and ``compbench run`` prints them last. Cheap: rows
and label files only, no torch, no pandas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compbench.results.analysis import MIN_EVAL_ROWS, eval_sizes, is_baseline, too_small
from compbench.results.rows import read_labels, read_rows
from compbench.tasks.glue import TSV_FORMATS
from compbench.tasks.metrics import METRICS

CORRELATIONS = ("pearson", "spearmanr", "spearman")  # a constant prediction has none: 0 by the task's own definition
MATTHEWS = ("matthews_correlation", "matthews")      # 0 for any constant prediction


def trust_warnings(run_dir: Path) -> list[str]:
    """The warnings of the run in ``run_dir`` (its ``results.jsonl`` and ``labels/``), one plain line each."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / "results.jsonl")
    labels = {task: read_labels(run_dir, task) for task in dict.fromkeys(r["task"] for r in rows)}
    return trust_warnings_for(rows, labels)


def trust_warnings_for(rows: list[dict], labels_by_task: dict[str, dict[str, list]] | None = None) -> list[str]:
    """The warnings for ``rows`` (raw or analysed), task by task in the order first seen; ``labels_by_task``
    (``{task: {split: labels}}``, as in ``labels/<task>.json``) serves rows that do not carry their labels."""
    labels_by_task = labels_by_task or {}
    sizes = eval_sizes(rows, labels_by_task)
    warnings = []
    for task in dict.fromkeys(r["task"] for r in rows if r["status"] == "ok"):
        if too_small(sizes.get(task)):
            warnings.append(f"{task}: the evaluation set has {sizes[task]} rows (fewer than {MIN_EVAL_ROWS}): "
                            "its intervals mean little and no gate is marked on it")
        teacher = teacher_warning(task, rows, labels_by_task.get(task, {}))
        if teacher:
            warnings.append(teacher)
    busy = busy_machine_warning(rows)
    return warnings + ([busy] if busy else [])


def busy_machine_warning(rows: list[dict]) -> str | None:
    """A line when cells were timed while other processes kept the machine busy (``machine_load``)."""
    loads = {r["cell_id"]: r["machine_load"] for r in rows
             if r["status"] == "ok" and (r.get("machine_load") or {}).get("quiet") is False}
    if not loads:
        return None
    worst = max(load["other_cores"] for load in loads.values())
    return (f"{len(loads)} cells were timed while other processes kept the machine busy (up to {worst:.1f} cores): "
            "their latencies may be slow; they were not cached, so a run on a quiet machine measures them again")


def teacher_warning(task: str, rows: list[dict], labels_by_split: dict[str, list]) -> str | None:
    """A line when the teacher (the baseline on its own fp32 backend) is no better than a constant prediction:
    its interval holds, or lies below, the best constant prediction's score under the task's headline metric."""
    teacher = next((r for r in rows if r["task"] == task and r["status"] == "ok" and is_baseline(r)
                    and r.get("metric") is not None), None)
    if teacher is None:
        return None
    labels = teacher.get("labels") or labels_by_split.get(teacher.get("eval_split"))
    constant = constant_score(teacher["metric_name"], labels, task)
    if constant is None:
        return None
    score, described = constant
    low, high = teacher.get("metric_ci95") or (teacher["metric"], teacher["metric"])
    if low > score + 1e-12:
        return None
    where = "holds" if high >= score - 1e-12 else "lies below"
    return (f"{task}: the teacher (baseline) scores {teacher['metric_name']} {teacher['metric']:.3f} "
            f"[{low:.3f}, {high:.3f}], which {where} the constant-prediction score {score:.3f} ({described}): "
            "it learned nothing, and compression results on it say little")


def constant_score(metric: str, labels: list | None, task: str | None = None) -> tuple[float, str] | None:
    """The best score a constant prediction gets on ``labels`` under ``metric`` (the task's own definition in
    ``compbench.tasks.metrics``), and which constant: accuracy the majority class's, F1 always predicting the
    positive class, Matthews correlation 0, a correlation 0 (a constant has none), AUROC 0.5 (a constant score
    ranks nothing); multi-label (a list of 0/1 per row): the best of predicting no label, every label, or each
    label's majority. None when it cannot be known (an unknown metric, or no labels where the score depends on
    them)."""
    if metric in CORRELATIONS:
        return 0.0, "a constant has no correlation"
    if metric == "auroc":
        return 0.5, "a constant score ranks no row above another"
    if metric not in METRICS:
        return None
    if not labels:
        return (0.0, "any constant prediction") if metric in MATTHEWS else None
    values = np.asarray(labels)
    fn = METRICS[metric]
    if values.ndim == 2:
        majority = (values.mean(axis=0) > 0.5).astype(values.dtype)
        candidates = [(np.zeros_like(values), "no label"), (np.ones_like(values), "every label"),
                      (np.broadcast_to(majority, values.shape), "each label's majority")]
        score, described = max(((fn(pred, values), text) for pred, text in candidates), key=lambda pair: pair[0])
        return float(score), f"always {described}"
    scored = [(fn(np.full(values.shape, value), values), value) for value in np.unique(values)]
    score, value = max(scored, key=lambda pair: pair[0])
    if metric in MATTHEWS:
        return float(score), "any constant prediction"
    return float(score), f"always {label_text(value, task)}"


def label_text(value, task: str | None) -> str:
    """``1, "not_entailment"`` where the task names its labels, else ``"1"``."""
    value = value.item() if hasattr(value, "item") else value
    label_map = TSV_FORMATS[task].label_map if task in TSV_FORMATS else None
    names = {v: k for k, v in (label_map or {}).items()}
    return f'{value}, "{names[value]}"' if value in names else f'"{value}"'
