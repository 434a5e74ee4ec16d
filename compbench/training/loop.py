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

from compbench.common.progress import Reporter
from compbench.config.training import TrainConfig
from compbench.tasks.encoding import EncodedRows, iter_batches

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
EvaluateFn = Callable[[torch.nn.Module], float]
GRADIENT_CLIP_NORM = 1.0
RUNNING_LOSS_STEPS = 20      # the loss shown and recorded: the mean over this many last steps


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
    lower_is_better: bool = False,
    auxiliary: torch.nn.Module | None = None,
    reporter: Reporter | None = None,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` in place; evaluate after every epoch when ``evaluate`` is given (and with
    ``keep_best`` end on the epoch that scored best: the highest score, or the lowest with ``lower_is_better``,
    as for a perplexity).

    ``auxiliary`` holds modules the loss trains alongside the model but that are not part of
    it (e.g. the projections of hidden-state distillation): optimised, never kept or evaluated.
    """
    reporter = reporter or Reporter(enabled=False)
    seed_everything(config.seed)
    total_steps, epochs = step_budget(len(rows), config)
    optimisation = Optimisation.create(
        [*model.named_parameters(), *(auxiliary.named_parameters() if auxiliary else [])], config, total_steps
    )
    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"))
    best: dict = {}                     # score, state and epoch of the best evaluation so far (keep_best)
    sign = -1.0 if lower_is_better else 1.0     # compare sign * score: higher is always better
    start = time.perf_counter()
    with reporter.bar(description, total_steps) as bar:
        for epoch in range(epochs):
            for module in (model, auxiliary):
                if module is not None:
                    module.train()
            batches = iter_batches(tokenizer, rows, config.batch_size, shuffle=True, seed=config.seed + epoch)
            result.final_loss = _train_epoch(model, batches, loss_fn, optimisation, result, total_steps, bar)
            if evaluate is not None:
                score = evaluate(model)
                result.history.append(
                    {"epoch": epoch + 1, "step": result.steps, "score": score, "loss": result.final_loss}
                )
                reporter.log(f"  {description}: epoch {epoch + 1}/{epochs}, step {result.steps}, eval {score:.4f}")
                if keep_best and sign * score > best.get("signed", -math.inf):
                    best.update(signed=sign * score, state=copy.deepcopy(model.state_dict()), epoch=epoch + 1)
    if best:
        model.load_state_dict(best["state"])
        result.best_epoch = best["epoch"]
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def step_budget(n_rows: int, config: TrainConfig) -> tuple[int, int]:
    """(optimiser steps, epochs started): ``epochs`` passes, cut at ``max_steps``."""
    steps_per_epoch = math.ceil(n_rows / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return total_steps, math.ceil(total_steps / steps_per_epoch)


@dataclass
class Optimisation:
    """AdamW (no weight decay on biases and norms), linear warm-up then decay, gradients clipped."""

    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR

    @classmethod
    def create(
        cls, named: list[tuple[str, torch.nn.Parameter]], config: TrainConfig, total_steps: int
    ) -> "Optimisation":
        from transformers import get_linear_schedule_with_warmup

        trained = [(name, p) for name, p in named if p.requires_grad]
        decay = [p for name, p in trained if not _no_decay(name)]
        no_decay = [p for name, p in trained if _no_decay(name)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
        )
        schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
        return cls([p for _, p in trained], optimizer, schedule)

    def step(self, loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, GRADIENT_CLIP_NORM)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)


def _train_epoch(model: torch.nn.Module, batches, loss_fn: LossFn, optimisation: Optimisation, result: TrainResult,
                 total_steps: int, bar) -> float:
    """One pass over ``batches`` (stopping at ``total_steps``); the running loss at its end."""
    running: list[float] = []
    for batch, targets in batches:
        loss = loss_fn(model, {k: torch.from_numpy(v) for k, v in {**batch, **targets}.items()})
        optimisation.step(loss)
        result.steps += 1
        running.append(loss.item())
        bar.advance(1, postfix=f"loss {np.mean(running[-RUNNING_LOSS_STEPS:]):.4f}")
        if result.steps >= total_steps:
            break
    return float(np.mean(running[-RUNNING_LOSS_STEPS:]))


def _no_decay(parameter_name: str) -> bool:
    return parameter_name.endswith("bias") or "LayerNorm" in parameter_name or "layer_norm" in parameter_name
