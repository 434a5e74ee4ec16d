"""Scoring a PyTorch module while it trains: logits without autograd, and the headline metric on
the task's primary evaluation split (a language-modeling task: the perplexity, lower is better)."""

from __future__ import annotations

import numpy as np
import torch

from compbench.tasks.encoding import EncodedRows, encode_rows, iter_batches, predict_logits
from compbench.tasks.glue import TaskSpec
from compbench.tasks.metrics import compute_metrics, predictions_from_logits
from compbench.training.loop import EvaluateFn

# Rows per forward pass when scoring without gradients (memory is not what limits it).
INFERENCE_BATCH_SIZE = 128
# Causal-LM rows per forward pass: their logits span the vocabulary (SmolLM2: 49,152 x 256 tokens x 4 bytes =
# 50 MB a row), so memory is what limits it.
LM_BATCH_SIZE = 4


def lower_is_better(task: TaskSpec) -> bool:
    """Whether ``task``'s headline score improves downwards (a perplexity)."""
    return task.is_language_modeling


def module_runner(module: torch.nn.Module):
    """``run(batch) -> logits`` for a PyTorch module in eval mode, without autograd."""
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        module.eval()
        with torch.inference_mode():
            return module(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.float().numpy()
    return run


def validation_evaluator(data, tokenizer, max_seq_len: int) -> tuple[EvaluateFn, str]:
    """``evaluate(module) -> headline metric`` on the task's primary evaluation split, and its name. For
    what a log or lineage reports, never to choose anything (the row reports that split)."""
    split, frame = next(iter(data.eval.items()))
    if data.task.is_language_modeling:
        return text_perplexity_evaluator(tokenizer, frame[data.task.text_fields[0]].astype(str).tolist(),
                                         max_seq_len), split
    return rows_evaluator(data.task, tokenizer, encode_rows(tokenizer, data.task, frame, max_seq_len)), split


def rows_evaluator(task: TaskSpec, tokenizer, rows: EncodedRows) -> EvaluateFn:
    """``evaluate(module) -> headline metric`` of ``task`` on ``rows`` (language modeling: the perplexity of
    the chunked rows, ``rows_perplexity``)."""
    if task.is_language_modeling:
        return lambda module: rows_perplexity(module, tokenizer, rows)

    def evaluate(module: torch.nn.Module) -> float:
        predictions = predictions_from_logits(task, predict_logits(module_runner(module), tokenizer, rows,
                                                                   INFERENCE_BATCH_SIZE))
        return compute_metrics(task, predictions, rows.labels)[task.metric_names[0]]

    return evaluate


def rows_perplexity(module: torch.nn.Module, tokenizer, rows: EncodedRows) -> float:
    """exp of the token-weighted mean NLL of causal-LM rows (labels: the rows' token ids, -100 unscored), each
    token predicted from the tokens before it in its row."""
    total, count = 0.0, 0
    module.eval()
    with torch.inference_mode():
        for batch, targets in iter_batches(tokenizer, rows, LM_BATCH_SIZE):
            logits = module(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits[:, :-1].float()
            labels = torch.from_numpy(targets["labels"])[:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                             reduction="sum"))
            count += int((labels != -100).sum())
    return float(np.exp(total / max(count, 1)))


def text_perplexity_evaluator(tokenizer, texts: list[str], max_length: int) -> EvaluateFn:
    """``evaluate(module) -> perplexity`` of documents by sliding windows (``tasks.language_modeling``)."""
    from compbench.tasks.language_modeling import perplexity

    return lambda module: perplexity(module, tokenizer, texts, max_length=max_length,
                                     batch_size=LM_BATCH_SIZE).perplexity
