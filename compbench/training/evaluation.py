"""Scoring a PyTorch module while it trains: logits without autograd, and the headline metric on
the task's primary evaluation split."""

from __future__ import annotations

import numpy as np
import torch

from compbench.tasks.encoding import EncodedRows, encode_rows, predict_logits
from compbench.tasks.glue import TaskSpec
from compbench.tasks.metrics import compute_metrics, predictions_from_logits
from compbench.training.loop import EvaluateFn

# Rows per forward pass when scoring without gradients (memory is not what limits it).
INFERENCE_BATCH_SIZE = 128


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
    return rows_evaluator(data.task, tokenizer, encode_rows(tokenizer, data.task, frame, max_seq_len)), split


def rows_evaluator(task: TaskSpec, tokenizer, rows: EncodedRows) -> EvaluateFn:
    """``evaluate(module) -> headline metric`` of ``task`` on ``rows``."""
    def evaluate(module: torch.nn.Module) -> float:
        predictions = predictions_from_logits(task, predict_logits(module_runner(module), tokenizer, rows,
                                                                   INFERENCE_BATCH_SIZE))
        return compute_metrics(task, predictions, rows.labels)[task.metric_names[0]]

    return evaluate
