"""One training loop for fine-tuning, distillation and recovery.

What differs between those is only the loss (``loss_fn(model, batch) -> scalar``),
so every trainer shares seeding, batching, the optimiser and schedule, the step budget,
progress, and per-epoch evaluation with the best state optionally kept.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from compbench.encoding import EncodedRows, encode_rows, iter_batches, predict_logits
from compbench.progress import Reporter

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
EvaluateFn = Callable[[torch.nn.Module], float]


class TrainConfig(BaseModel):
    """Budget and optimiser settings (the suite's ``teacher:`` section, and compressors')."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1, description="passes over the training rows")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_seq_len: int = Field(128, ge=8, le=512, description="tokens kept per training/eval row")
    seed: int = 42


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list[dict] = field(default_factory=list)   # one entry per evaluation
    best_epoch: int | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss on the labels (cross-entropy, or MSE for regression)."""
    return model(**batch).loss


def fit(
    model: torch.nn.Module,
    tokenizer,
    rows: EncodedRows,
    config: TrainConfig,
    *,
    loss_fn: LossFn = task_loss,
    evaluate: EvaluateFn | None = None,
    keep_best: bool = False,
    auxiliary: torch.nn.Module | None = None,
    reporter: Reporter | None = None,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` in place; evaluate after every epoch when ``evaluate`` is given.

    ``auxiliary`` holds modules the loss trains alongside the model but that are not part of
    it (e.g. the projections of hidden-state distillation): optimised, never kept or evaluated.
    """
    from transformers import get_linear_schedule_with_warmup

    reporter = reporter or Reporter(enabled=False)
    seed_everything(config.seed)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    named = [*model.named_parameters(), *(auxiliary.named_parameters() if auxiliary is not None else [])]
    trained = [p for _, p in named if p.requires_grad]
    decay = [p for n, p in named if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in named if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"))
    best_score, best_state = -math.inf, None
    start = time.perf_counter()
    with reporter.bar(description, total_steps) as bar:
        for epoch in range(epochs):
            model.train()
            if auxiliary is not None:
                auxiliary.train()
            running = []
            for batch, targets in iter_batches(tokenizer, rows, config.batch_size, shuffle=True, seed=config.seed + epoch):
                tensors = {k: torch.from_numpy(v) for k, v in {**batch, **targets}.items()}
                loss = loss_fn(model, tensors)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                result.steps += 1
                running.append(loss.item())
                bar.advance(1, postfix=f"loss {np.mean(running[-20:]):.4f}")
                if result.steps >= total_steps:
                    break
            result.final_loss = float(np.mean(running[-20:]))
            if evaluate is not None:
                score = evaluate(model)
                result.history.append({"epoch": epoch + 1, "step": result.steps, "score": score, "loss": result.final_loss})
                reporter.log(f"  {description}: epoch {epoch + 1}/{epochs}, step {result.steps}, eval {score:.4f}")
                if keep_best and score > best_score:
                    best_score, best_state, result.best_epoch = score, copy.deepcopy(model.state_dict()), epoch + 1
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _no_decay(parameter_name: str) -> bool:
    return parameter_name.endswith("bias") or "LayerNorm" in parameter_name or "layer_norm" in parameter_name


def module_runner(module: torch.nn.Module):
    """``run(batch) -> logits`` for a PyTorch module in eval mode, without autograd."""
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        module.eval()
        with torch.inference_mode():
            return module(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.float().numpy()
    return run


def validation_evaluator(data, tokenizer, max_seq_len: int) -> tuple[EvaluateFn, str]:
    """``evaluate(module) -> headline metric`` on the task's primary evaluation split, and its name."""
    from compbench.metrics import compute_metrics, predictions_from_logits

    split, frame = next(iter(data.eval.items()))
    rows = encode_rows(tokenizer, data.task, frame, max_seq_len)

    def evaluate(module: torch.nn.Module) -> float:
        predictions = predictions_from_logits(data.task, predict_logits(module_runner(module), tokenizer, rows, 128))
        return compute_metrics(data.task, predictions, rows.labels)[data.task.metric_names[0]]

    return evaluate, split
