"""The GLUE tasks as data: columns, label count, official metrics, evaluation splits, and how the
original GLUE TSV files map onto the Hugging Face columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from compbench.common.errors import UsageError
from compbench.common.registry import unknown_name_message


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: its Hugging Face columns, label count, official metrics and splits."""

    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    metric_names: tuple[str, ...]
    eval_splits: tuple[str, ...]
    tsv_dir: str

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose single "label" is a similarity score."""
        return self.num_labels == 1


def _spec(name: str, text_fields: tuple[str, ...], num_labels: int, metrics: tuple[str, ...],
          tsv_dir: str, eval_splits: tuple[str, ...] = ("validation",)) -> TaskSpec:
    return TaskSpec(name, text_fields, num_labels, metrics, eval_splits, tsv_dir)


_PAIR = ("sentence1", "sentence2")


# In the GLUE benchmark's own order.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec("cola", ("sentence",), 2, ("matthews_correlation",), "CoLA"),
        _spec("sst2", ("sentence",), 2, ("accuracy",), "SST-2"),
        _spec("mrpc", _PAIR, 2, ("f1", "accuracy"), "MRPC"),
        _spec("qqp", ("question1", "question2"), 2, ("f1", "accuracy"), "QQP"),
        _spec("stsb", _PAIR, 1, ("pearson", "spearmanr"), "STS-B"),
        _spec("mnli", ("premise", "hypothesis"), 3, ("accuracy",), "MNLI",
              ("validation_matched", "validation_mismatched")),
        _spec("qnli", ("question", "sentence"), 2, ("accuracy",), "QNLI"),
        _spec("rte", _PAIR, 2, ("accuracy",), "RTE"),
        _spec("wnli", _PAIR, 2, ("accuracy",), "WNLI"),
    )
}


def task_names() -> list[str]:
    """All task names, sorted alphabetically."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name`` (exact HF config name); UsageError with a suggestion otherwise."""
    if name in TASKS:
        return TASKS[name]
    message = unknown_name_message("task", name, task_names())
    raise UsageError(message)


@dataclass(frozen=True)
class TsvFormat:
    """How one task's original GLUE TSV files map onto Hugging Face columns."""

    columns: Mapping[str, str]  # HF column -> TSV column
    label_column: str
    label_map: Mapping[str, int] | None = None  # string labels -> ids; None: numeric labels
    names: tuple[str, ...] | None = None  # column names of header-less files (CoLA)


_NLI2 = {"entailment": 0, "not_entailment": 1}
_SAME = {"sentence1": "sentence1", "sentence2": "sentence2"}


# Per task, the original GLUE TSV format (as written by download_glue_data.py).
TSV_FORMATS: dict[str, TsvFormat] = {
    "cola": TsvFormat({"sentence": "sentence"}, "label",
                      names=("source", "label", "orig_label", "sentence")),
    "sst2": TsvFormat({"sentence": "sentence"}, "label"),
    "mrpc": TsvFormat({"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality"),
    "qqp": TsvFormat({"question1": "question1", "question2": "question2"}, "is_duplicate"),
    "stsb": TsvFormat(_SAME, "score"),
    "mnli": TsvFormat({"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
                      {"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": TsvFormat({"question": "question", "sentence": "sentence"}, "label", _NLI2),
    "rte": TsvFormat(_SAME, "label", _NLI2),
    "wnli": TsvFormat(_SAME, "label"),
}


# Hugging Face split name -> file name in the original GLUE folders.
TSV_SPLIT_FILES: dict[str, str] = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test": "test.tsv",
}
