"""Teacher-made transfer data: rows that carry no human label, which the teacher labels for the student (its soft
targets, or its predicted labels for black-box distillation), the usual reason distillation beats training on the
labels alone.

Where the rows come from (``TransferConfig``)
    ``unlabeled: rest``: the task's training rows that ``limit_train`` left out, their labels never read; or a
    file of text (one row per line of a ``.txt``, or a column of a JSONL/CSV/parquet file), relative to the suite;
    ``unlabeled_rows`` keeps a seeded subset. ``augment``: seeded word-level edits of the labelled training rows
    (TinyBERT and EDA style): each word is replaced (by a word drawn from the training text's own word
    frequencies: there is no synonym resource offline), deleted, or swapped with another of its row's words,
    each with its probability; ``multiplier`` edited copies per row. A pair task's two texts are edited apart.

The rows are text only: the teacher's logits on them are computed once and kept beside the teacher, like its
logits on the labelled rows, keyed by the rows' content.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.common.errors import UsageError
from compbench.common.sealing import file_sha256
from compbench.tasks.data import TaskData
from compbench.tasks.glue import TaskSpec
from compbench.tasks.language_modeling import CORPUS_FORMATS, load_corpus, read_text_table

REST = "rest"


class AugmentConfig(BaseModel):
    """Seeded word-level edits of the labelled rows (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    multiplier: int = Field(4, ge=1, le=100, description="edited copies of each labelled row")
    replace: float = Field(0.1, ge=0, le=1, description="chance a word is replaced by a corpus word")
    delete: float = Field(0.1, ge=0, le=1, description="chance a word is deleted")
    swap: float = Field(0.1, ge=0, le=1, description="chance a word swaps places with another of its row")

    @model_validator(mode="after")
    def _edits_something(self) -> "AugmentConfig":
        if self.replace + self.delete + self.swap == 0:
            raise ValueError("augment: every edit probability is 0, so the copies would equal the rows; "
                             "give replace, delete or swap > 0")
        if self.replace + self.delete > 1:
            raise ValueError("augment: replace + delete exceed 1 (a word is replaced or deleted, not both)")
        return self


class TransferConfig(BaseModel):
    """Rows without a human label that the teacher labels for the student (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    unlabeled: str | None = Field(None, description="'rest' (the train rows limit_train left out) or a text file")
    column: str = Field("text", description="a JSONL/CSV/parquet unlabeled file's text column")
    unlabeled_rows: int | None = Field(None, ge=1, description="a seeded subset of the unlabeled rows")
    augment: AugmentConfig | None = None

    @model_validator(mode="after")
    def _some_rows(self) -> "TransferConfig":
        if self.unlabeled is None and self.augment is None:
            raise ValueError("transfer: give unlabeled (rest or a file), augment, or both")
        if self.unlabeled_rows is not None and self.unlabeled is None:
            raise ValueError("unlabeled_rows: there are no unlabeled rows; set unlabeled")
        return self


def unlabeled_rows(config: TransferConfig, data: TaskData, base_dir: Path, seed: int) -> pd.DataFrame:
    """The unlabeled rows as the task's text columns (a file's text fills a single-text task's column; a pair
    task needs ``rest``)."""
    task = data.task
    if config.unlabeled == REST:
        rows = data.spare_train
        if rows.empty:
            raise UsageError(f"transfer.unlabeled rest: {task.name} has no training rows beyond the labelled ones "
                             "(set data.limit_train below the train split's size, or give a file)")
    else:
        if len(task.text_fields) != 1:
            raise UsageError(f"transfer.unlabeled {config.unlabeled}: {task.name} takes pairs of texts "
                             f"({', '.join(task.text_fields)}); a file gives single texts: use unlabeled: rest")
        rows = pd.DataFrame({task.text_fields[0]: text_file_rows(base_dir, config.unlabeled, config.column)})
    if config.unlabeled_rows is not None and config.unlabeled_rows < len(rows):
        rows = rows.sample(n=config.unlabeled_rows, random_state=seed).sort_index()
    return rows.reset_index(drop=True)[list(task.text_fields)]


def word_frequencies(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(words, probabilities) of the whitespace-separated words of ``texts``, sorted for a stable order."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
    words = np.array(sorted(counts))
    frequency = np.array([counts[w] for w in words], dtype=np.float64)
    return words, frequency / frequency.sum()


def augment_text(text: str, rng: np.random.Generator, vocabulary: tuple[np.ndarray, np.ndarray],
                 config: AugmentConfig) -> str:
    """One edited copy of ``text``: per word a replacement or a deletion (never every word), then swaps."""
    words = text.split()
    if not words:
        return text
    words_list, probabilities = vocabulary
    out = []
    for word in words:
        draw = rng.random()
        if draw < config.replace:
            out.append(str(words_list[rng.choice(len(words_list), p=probabilities)]))
        elif draw < config.replace + config.delete:
            continue
        else:
            out.append(word)
    if not out:                                     # every word deleted: keep one, as EDA does
        out = [words[int(rng.integers(len(words)))]]
    for i in range(len(out)):
        if len(out) > 1 and rng.random() < config.swap:
            j = int(rng.integers(len(out) - 1))
            j += j >= i                             # another position than i
            out[i], out[j] = out[j], out[i]
    return " ".join(out)


def augmented_rows(task: TaskSpec, train: pd.DataFrame, config: AugmentConfig, seed: int) -> pd.DataFrame:
    """``config.multiplier`` edited copies of every labelled row's texts (no labels), seeded: the same rows,
    config and seed give the same copies."""
    rng = np.random.default_rng(seed)
    columns = {}
    for field in task.text_fields:
        texts = train[field].astype(str).tolist()
        vocabulary = word_frequencies(texts)
        columns[field] = [augment_text(text, rng, vocabulary, config)
                          for _ in range(config.multiplier) for text in texts]
    return pd.DataFrame(columns)


def transfer_rows(config: TransferConfig, data: TaskData, base_dir: Path, seed: int,
                  train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every transfer row, text columns only: the unlabeled ones, then the augmented copies of ``train`` (default:
    the task's labelled training rows)."""
    parts = []
    if config.unlabeled is not None:
        parts.append(unlabeled_rows(config, data, base_dir, seed))
    if config.augment is not None:
        parts.append(augmented_rows(data.task, data.train if train is None else train, config.augment, seed))
    return pd.concat(parts, ignore_index=True)


def suite_file(base_dir: Path, name: str) -> Path:
    """A file a parameter names, relative to the suite's folder ``base_dir`` unless absolute."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else (Path(base_dir) / path).resolve()


def text_file_rows(base_dir: Path, name: str, column: str) -> list[str]:
    """The texts of a file a parameter names: one per line of a ``.txt``, else ``column`` of a JSONL/CSV/parquet
    file (blank ones dropped)."""
    path = suite_file(base_dir, name)
    return list(load_corpus(path, column=column, separator="\n" if path.suffix == ".txt" else None).documents)


def text_file_columns(base_dir: Path, name: str, columns: list[str]) -> list[tuple[str, ...]]:
    """``columns`` of a JSONL/CSV/parquet file a parameter names, row by row, as text (missing values empty)."""
    path = suite_file(base_dir, name)
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    kind = CORPUS_FORMATS.get(path.suffix.lower())
    if kind not in ("jsonl", "parquet", "csv"):
        raise UsageError(f"{path}: the columns {', '.join(columns)} need a JSONL, CSV or parquet file")
    frame = read_text_table(path, kind, columns).fillna("")
    return [tuple(str(value) for value in row) for row in frame.itertuples(index=False)]


def file_digest(base_dir: Path, name: str) -> str | None:
    """sha256 hex of a file's bytes (relative to ``base_dir``), or None where it is missing (its build then
    says so)."""
    path = suite_file(base_dir, name)
    return file_sha256(path) if path.is_file() else None


def rows_digest(rows: pd.DataFrame) -> str:
    """sha256 hex of the rows' texts, in order: the key of the teacher's logits on them."""
    digest = hashlib.sha256()
    for record in rows.itertuples(index=False):
        digest.update("\x1f".join(map(str, record)).encode() + b"\x1e")
    return digest.hexdigest()
