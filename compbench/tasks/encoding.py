"""Turning task rows into model inputs, and running a model over them in batches.

Tokenisation happens here, once, the same way for every backend: a session only ever
sees ``dict[str, np.ndarray]`` of int64 ``input_ids``/``attention_mask``/``token_type_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from compbench.tasks.glue import TaskSpec

Batch = dict[str, np.ndarray]
RunFn = Callable[[Batch], np.ndarray]


def batch_list(batches: Batch | list[Batch]) -> list[Batch]:
    """A timed shape's inputs as a list: one padded batch (a fixed shape) or a natural shape's batches."""
    return batches if isinstance(batches, list) else [batches]


IGNORE_LABEL = -100          # a class id no row has: the row carries no label (PyTorch's ignore index)


@dataclass
class EncodedRows:
    """Tokenised rows (unpadded), their labels, and optional further per-row training targets
    (for example a teacher's logits, computed once and looked up per batch)."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: np.ndarray) -> "EncodedRows":
        """The rows at ``index``, in that order, with their labels and targets."""
        return EncodedRows([self.features[i] for i in index], self.labels[index],
                           {name: values[index] for name, values in self.targets.items()})

    def __add__(self, other: "EncodedRows") -> "EncodedRows":
        """These rows, then ``other``'s (both with the same targets)."""
        return EncodedRows(self.features + other.features, np.concatenate([self.labels, other.labels]),
                           {name: np.concatenate([values, other.targets[name]])
                            for name, values in self.targets.items()})


def texts_of(task: TaskSpec, rows: pd.DataFrame) -> tuple[list[str], ...]:
    return tuple(rows[field].astype(str).tolist() for field in task.text_fields)


def encode_rows(tokenizer, task: TaskSpec, rows: pd.DataFrame, max_seq_len: int) -> EncodedRows:
    """Tokenise ``rows`` with truncation to ``max_seq_len`` and no padding."""
    return EncodedRows(features=encode_features(tokenizer, task, rows, max_seq_len), labels=encode_labels(task, rows))


def encode_unlabeled_rows(tokenizer, task: TaskSpec, rows: pd.DataFrame, max_seq_len: int) -> EncodedRows:
    """Rows without a label (transfer data for distillation): their labels say so (``unlabeled``)."""
    return EncodedRows(features=encode_features(tokenizer, task, rows, max_seq_len), labels=unlabeled(task, len(rows)))


def encode_features(tokenizer, task: TaskSpec, rows: pd.DataFrame, max_seq_len: int) -> list[dict[str, list[int]]]:
    encoded = tokenizer(*texts_of(task, rows), truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]


def unlabeled(task: TaskSpec, n: int) -> np.ndarray:
    """Labels that mark ``n`` rows as carrying none: class id -100 (the loss's ignore index), NaN scores."""
    if task.is_multi_label:
        return np.full((n, task.num_labels), np.nan, dtype=np.float32)
    return np.full(n, np.nan, dtype=np.float32) if task.is_regression else np.full(n, IGNORE_LABEL, dtype=np.int64)


def labelled_mask(labels):
    """Which rows of a batch's labels (a torch tensor) carry a label (see ``unlabeled``)."""
    if labels.is_floating_point():
        return ~labels.isnan().reshape(len(labels), -1).any(dim=1)
    return labels != IGNORE_LABEL


def encode_text_chunks(tokenizer, texts: list[str], max_seq_len: int) -> EncodedRows:
    """Causal-LM training rows: the documents tokenised (no special tokens), joined with the end-of-text token
    between them and cut into rows of exactly ``max_seq_len`` tokens (the trailing remainder dropped, as
    transformers' ``run_clm`` groups text; a corpus shorter than one row gives that one shorter row). The labels
    are the rows' own token ids (the model shifts them), an int64 (rows, tokens) matrix. (A tokenizer without an
    end-of-text token separates documents with its separator token, or with nothing.)"""
    end = next((t for t in (tokenizer.eos_token_id, tokenizer.sep_token_id) if t is not None), None)
    separator = [end] if end is not None else []
    stream: list[int] = []
    for text in texts:
        stream += list(tokenizer(text, add_special_tokens=False).input_ids) + separator
    stream = stream[:-len(separator)] if separator else stream
    if len(stream) < 2:
        raise ValueError("the training text gives fewer than 2 tokens: nothing to learn to predict")
    starts = range(0, len(stream) - max_seq_len + 1, max_seq_len) if len(stream) >= max_seq_len else [0]
    chunks = [stream[start:start + max_seq_len] for start in starts]
    features = [{"input_ids": chunk, "attention_mask": [1] * len(chunk)} for chunk in chunks]
    return EncodedRows(features=features, labels=np.asarray(chunks, dtype=np.int64))


def encode_training_rows(tokenizer, task: TaskSpec, rows: pd.DataFrame, max_seq_len: int) -> EncodedRows:
    """What a model trains (or calibrates) on: a language-modeling task's text chunked into rows
    (``encode_text_chunks``), any other task's rows encoded one by one with their labels (``encode_rows``)."""
    if task.is_language_modeling:
        return encode_text_chunks(tokenizer, texts_of(task, rows)[0], max_seq_len)
    return encode_rows(tokenizer, task, rows, max_seq_len)


def encode_labels(task: TaskSpec, rows: pd.DataFrame) -> np.ndarray:
    """The labels as a model's loss takes them: int64 class ids, float32 scores (regression), or a float32
    multi-hot matrix (rows, labels) for multi-label (transformers' BCE loss needs floats)."""
    if task.is_multi_label:
        return np.asarray(rows["label"].tolist(), dtype=np.float32).reshape(len(rows), task.num_labels)
    return rows["label"].to_numpy(dtype=np.float32 if task.is_regression else np.int64)


def pad_batch(tokenizer, features: list[dict[str, list[int]]], length: int | None = None) -> Batch:
    """Pad (right) to the longest row (``length=None``) or to exactly ``length`` tokens."""
    width = length if length is not None else max(len(f["input_ids"]) for f in features)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    pad_values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    batch = {}
    for key in features[0]:
        column = np.full((len(features), width), pad_values[key], dtype=np.int64)
        for i, feature in enumerate(features):
            values = feature[key][:width]
            column[i, : len(values)] = values
        batch[key] = column
    return batch


def iter_batches(
    tokenizer, rows: EncodedRows, batch_size: int, *, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """Batches padded to their longest row, with the matching ``labels`` and other targets."""
    order = np.random.default_rng(seed).permutation(len(rows)) if shuffle else np.arange(len(rows))
    for start in range(0, len(rows), batch_size):
        index = order[start : start + batch_size]
        targets = {"labels": rows.labels[index], **{name: values[index] for name, values in rows.targets.items()}}
        yield pad_batch(tokenizer, [rows.features[i] for i in index]), targets


def predict_logits(run: RunFn, tokenizer, rows: EncodedRows, batch_size: int) -> np.ndarray:
    """Logits for every row, in order; rows are length-sorted so batches pad little."""
    order = np.argsort([len(f["input_ids"]) for f in rows.features], kind="stable")
    sorted_rows = EncodedRows([rows.features[i] for i in order], rows.labels[order])
    chunks = [np.asarray(run(batch)) for batch, _ in iter_batches(tokenizer, sorted_rows, batch_size)]
    logits = np.concatenate(chunks, axis=0)
    out = np.empty_like(logits)
    out[order] = logits
    return out


def natural_batches(tokenizer, task: TaskSpec, rows: pd.DataFrame, batch_size: int, max_seq_len: int, seed: int,
                    count: int) -> list[Batch]:
    """``count`` batches of ``batch_size`` real rows drawn seeded, each padded to its own longest row after
    truncation at ``max_seq_len``: what a service sends. Rows are picked by index and the batches put in an order
    read from the text (not the tokens), so every tokenizer gets the same rows in the same order: ordered by their
    longest row's characters, then in van der Corput order of that ranking (the median batch, the quartiles, the
    octiles, ...), so that the first few calls already span the lengths."""
    encoded = encode_rows(tokenizer, task, rows, max_seq_len)
    characters = np.sum([np.fromiter(map(len, texts), dtype=np.int64, count=len(rows))
                         for texts in texts_of(task, rows)], axis=0)
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(rows), size=batch_size, replace=batch_size > len(rows)) for _ in range(count)]
    ranked = sorted(picks, key=lambda pick: int(characters[pick].max()))
    return [pad_batch(tokenizer, [encoded.features[i] for i in ranked[k]]) for k in spread_order(count)]


def spread_order(count: int) -> list[int]:
    """0 .. count-1 in the order that spreads over them soonest: the index at each van der Corput point (1/2, 1/4,
    3/4, 1/8, ...) of the range, each once."""
    order: list[int] = []
    k = 1
    while len(order) < count:
        point, denominator, rest = 0.0, 1.0, k
        while rest:
            denominator *= 2
            point += (rest % 2) / denominator
            rest //= 2
        index = int(point * count)
        if index not in order:
            order.append(index)
        k += 1
    return order


def timing_batch(tokenizer, task: TaskSpec, rows: pd.DataFrame, batch_size: int, seq_len: int, seed: int) -> Batch:
    """``batch_size`` real rows padded (or truncated) to exactly ``seq_len`` tokens."""
    picked = rows.sample(n=batch_size, replace=batch_size > len(rows), random_state=seed)
    encoded = encode_rows(tokenizer, task, picked, max_seq_len=seq_len)
    return pad_batch(tokenizer, encoded.features, length=seq_len)
