"""Scoring a PyTorch module while it trains: logits without autograd, and the headline metric on
the task's primary evaluation split."""

from __future__ import annotations

import numpy as np
import torch

from compbench.tasks.encoding import encode_rows, predict_logits
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
    """``evaluate(module) -> headline metric`` on the task's primary evaluation split, and its name."""
    split, frame = next(iter(data.eval.items()))
    rows = encode_rows(tokenizer, data.task, frame, max_seq_len)

    def evaluate(module: torch.nn.Module) -> float:
        predictions = predictions_from_logits(
            data.task, predict_logits(module_runner(module), tokenizer, rows, INFERENCE_BATCH_SIZE)
        )
        return compute_metrics(data.task, predictions, rows.labels)[data.task.metric_names[0]]

    return evaluate, split
