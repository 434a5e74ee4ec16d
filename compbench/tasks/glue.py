"""The task spec every task shares, the GLUE tasks as data (columns, labels, official metrics, evaluation splits),
and how the original GLUE TSV files map onto the Hugging Face columns. Tasks from a user's own files are built
in ``compbench.tasks.files``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from compbench.common.errors import UsageError
from compbench.common.registry import unknown_name_message

# What a task predicts: one class per row, any set of labels per row, or one number per row.
# language_modeling: a causal LM scored on text (perplexity, zero-shot choices); no labels, num_labels 0.
KINDS = ("single_label", "multi_label", "regression", "language_modeling")


@dataclass(frozen=True)
class TaskSpec:
    """One task: its text columns, what it predicts, its metrics (the first is the headline) and splits.

    ``kind`` is ``single_label`` (one of ``num_labels`` classes per row, label ids 0..num_labels-1),
    ``multi_label`` (any subset of ``num_labels`` labels per row, labels multi-hot) or ``regression``
    (one number per row, ``num_labels == 1``); left empty it follows ``num_labels`` (1: regression).
    ``label_names`` are the labels in id order (None where the task has no names). ``tsv_dir`` is the
    task's folder in the original GLUE download (GLUE tasks only). ``labels_from`` says what set the labels'
    order, which a given model's head is checked against: ``""`` the task itself (GLUE), ``"list"`` the user's
    ``labels:`` list (the model's output order), ``"mapping"`` a ``labels:`` mapping onto the model's labels,
    ``"data"`` the data (sorted, or a dataset's ClassLabel order).
    """

    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    metric_names: tuple[str, ...]
    eval_splits: tuple[str, ...]
    tsv_dir: str | None = None
    kind: str = ""
    label_names: tuple[str, ...] | None = None
    labels_from: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "regression" if self.num_labels == 1 else "single_label")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "regression") != (self.num_labels == 1):
            raise ValueError(f"task {self.name}: a {self.kind} task cannot have num_labels={self.num_labels}")
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))
            if len(self.label_names) != self.num_labels or self.kind == "regression":
                raise ValueError(f"task {self.name}: {len(self.label_names)} label names for a {self.kind} task "
                                 f"with {self.num_labels} outputs")

    @property
    def is_regression(self) -> bool:
        """True for a regression task (STS-B), whose single "label" is a score."""
        return self.kind == "regression"

    @property
    def is_multi_label(self) -> bool:
        """True when a row may carry any number of the task's labels (multi-hot labels, a sigmoid per label)."""
        return self.kind == "multi_label"

    @property
    def is_language_modeling(self) -> bool:
        """True for a causal-LM task: text to score (perplexity, zero-shot), rows without labels."""
        return self.kind == "language_modeling"

    @property
    def is_binary(self) -> bool:
        """True for single-label classification with exactly two classes."""
        return self.kind == "single_label" and self.num_labels == 2


def _spec(name: str, text_fields: tuple[str, ...], num_labels: int, metrics: tuple[str, ...],
          tsv_dir: str, eval_splits: tuple[str, ...] = ("validation",),
          label_names: tuple[str, ...] | None = None) -> TaskSpec:
    return TaskSpec(name, text_fields, num_labels, metrics, eval_splits, tsv_dir, label_names=label_names)


_PAIR = ("sentence1", "sentence2")
# Label names in id order, as the Hugging Face dataset nyu-mll/glue names them (its ClassLabel features).
_NLI = ("entailment", "not_entailment")


# In the GLUE benchmark's own order.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec("cola", ("sentence",), 2, ("matthews_correlation",), "CoLA",
              label_names=("unacceptable", "acceptable")),
        _spec("sst2", ("sentence",), 2, ("accuracy",), "SST-2", label_names=("negative", "positive")),
        _spec("mrpc", _PAIR, 2, ("f1", "accuracy"), "MRPC", label_names=("not_equivalent", "equivalent")),
        _spec("qqp", ("question1", "question2"), 2, ("f1", "accuracy"), "QQP",
              label_names=("not_duplicate", "duplicate")),
        _spec("stsb", _PAIR, 1, ("pearson", "spearmanr"), "STS-B"),
        _spec("mnli", ("premise", "hypothesis"), 3, ("accuracy",), "MNLI",
              ("validation_matched", "validation_mismatched"), ("entailment", "neutral", "contradiction")),
        _spec("qnli", ("question", "sentence"), 2, ("accuracy",), "QNLI", label_names=_NLI),
        _spec("rte", _PAIR, 2, ("accuracy",), "RTE", label_names=_NLI),
        _spec("wnli", _PAIR, 2, ("accuracy",), "WNLI", label_names=("not_entailment", "entailment")),
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
