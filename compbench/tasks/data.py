"""The rows one benchmark cell trains and evaluates on: loaded from a source, unlabelled rows dropped,
seeded subsets taken, and a content fingerprint that cache keys use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

from compbench.common.errors import DataNotFoundError, UsageError
from compbench.tasks.glue import TASKS, TaskSpec
from compbench.tasks.sources import DROP_REASONS_ATTR, MALFORMED_LINES_ATTR, DataSource


@dataclass
class TaskData:
    """The rows one benchmark cell trains and evaluates on."""

    task: TaskSpec
    train: pd.DataFrame
    eval: dict[str, pd.DataFrame]
    source: str
    fingerprint: str
    # split -> rows dropped before subsetting: malformed TSV lines plus rows without a label.
    dropped: dict[str, int] = field(default_factory=dict)
    # split -> {reason: rows} where the source says why (file tasks: blank text, missing label), plus "no label".
    drop_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    # the train split's rows that ``limit_train`` left out, text only (no label): unlabeled transfer data that
    # distillation may have its teacher label; empty without a limit
    spare_train: pd.DataFrame = field(default_factory=pd.DataFrame)


def _check_limit(name: str, value: int | None) -> None:
    """Limits are None or a positive int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def _drop_unlabelled(frame: pd.DataFrame, task: TaskSpec | None = None) -> tuple[pd.DataFrame, int]:
    """Remove rows whose label is missing or -1 (GLUE test style); (rows kept, count dropped). A multi-label
    row's label is a tuple of 0/1 per label; missing is None."""
    if task is not None and task.is_multi_label:
        keep = frame["label"].map(lambda value: isinstance(value, tuple)).astype(bool)
    else:
        keep = frame["label"].notna() & (frame["label"] >= 0)
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def _check_labels(task: TaskSpec, frame: pd.DataFrame, where: str) -> None:
    """A split must keep some rows, with classification labels in 0..num_labels-1 (multi-label: a 0/1 tuple of
    num_labels)."""
    if frame.empty:
        raise DataNotFoundError(f"{where} has no labelled rows")
    if task.is_multi_label:
        bad = frame["label"].map(lambda v: len(v) != task.num_labels or any(x not in (0, 1) for x in v)).astype(bool)
        if bad.any():
            raise DataNotFoundError(f"{where} has label {frame['label'][bad].iloc[0]!r}, but {task.name} has "
                                    f"{task.num_labels} labels (one 0/1 each)")
        return
    if not task.is_regression and int(frame["label"].max()) >= task.num_labels:
        raise DataNotFoundError(
            f"{where} has label {int(frame['label'].max())}, but {task.name} has {task.num_labels} labels"
        )


def _subset_and_rest(frame: pd.DataFrame, limit: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded sample without replacement of ``limit`` rows (or all rows, in file order), and the rows it left
    out (in file order)."""
    if limit is None or limit >= len(frame):
        return frame, frame.iloc[:0]
    chosen = frame.sample(n=limit, random_state=seed)
    return chosen.reset_index(drop=True), frame.drop(index=chosen.index).reset_index(drop=True)


def _load_one(task: TaskSpec, source: DataSource, split: str, limit: int | None,
              seed: int) -> tuple[pd.DataFrame, int, dict[str, int], pd.DataFrame]:
    """One split, cleaned and subset; (rows, count dropped, why they were dropped, the rows the limit left out:
    their text columns only)."""
    raw = source.load_split(task, split)
    malformed = int(raw.attrs.get(MALFORMED_LINES_ATTR, 0))
    reasons = {str(k): int(v) for k, v in (raw.attrs.get(DROP_REASONS_ATTR) or {}).items()}
    if malformed > sum(reasons.values()):
        reasons["malformed lines"] = malformed - sum(reasons.values())
    rows, unlabelled = _drop_unlabelled(raw, task)
    if unlabelled:
        reasons["no label"] = reasons.get("no label", 0) + unlabelled
    _check_labels(task, rows, f"{task.name}/{split} in {source.description}")
    chosen, rest = _subset_and_rest(rows, limit, seed)
    return chosen, malformed + unlabelled, reasons, rest[list(task.text_fields)]


def frame_digest(frame: pd.DataFrame) -> bytes:
    """Content digest of a frame: column names, dtypes and per-row value hashes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.digest()


def fingerprint(task: TaskSpec, splits: Mapping[str, pd.DataFrame], *, limit_train: int | None,
                limit_eval: int | None, seed: int) -> str:
    """sha256 hex over the task name, limits, seed and the selected rows of every split (and, for a task that is
    not one of the GLUE specs, its kind, label names and columns: the label mapping, not only the ids)."""
    digest = hashlib.sha256()
    args = {"task": task.name, "limit_train": limit_train, "limit_eval": limit_eval, "seed": seed}
    if TASKS.get(task.name) != task:     # a file task (or a changed spec): its kind, labels and columns count too
        args["spec"] = {"kind": task.kind, "labels": task.label_names, "num_labels": task.num_labels,
                        "text_fields": task.text_fields, "eval_splits": task.eval_splits}
    digest.update(json.dumps(args, sort_keys=True).encode())
    for split, frame in splits.items():
        digest.update(split.encode() + b"\0" + frame_digest(frame))
    return digest.hexdigest()


def load_task_data(task: TaskSpec, source: DataSource, *, limit_train: int | None = None,
                   limit_eval: int | None = None, seed: int = 0) -> TaskData:
    """Train and eval rows of ``task``, unlabelled rows dropped, limits applied by seeded sampling."""
    _check_limit("limit_train", limit_train)
    _check_limit("limit_eval", limit_eval)
    train, dropped_train, reasons_train, spare = _load_one(task, source, "train", limit_train, seed)
    dropped, reasons = {"train": dropped_train}, {"train": reasons_train}
    evals: dict[str, pd.DataFrame] = {}
    for split in task.eval_splits:
        evals[split], dropped[split], reasons[split], _ = _load_one(task, source, split, limit_eval, seed)
    # the spare rows count only where there are some: a run without a limit keeps its fingerprint
    digest = fingerprint(task, {"train": train, **evals, **({"spare_train": spare} if len(spare) else {})},
                         limit_train=limit_train, limit_eval=limit_eval, seed=seed)
    return TaskData(task, train, evals, source.description, digest, dropped, reasons, spare)
