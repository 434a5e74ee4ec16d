"""The teacher signal shared by distillation and recovery fine-tuning: the knowledge-distillation
loss (Hinton et al. 2015) and training a model against one or more teachers' cached logits.

Loss: ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)`` with D
the forward KL (default), reverse KL or Jensen-Shannon divergence; for regression (STS-B)
``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, labels)``. ``targets:
teacher_labels`` is black-box: only the teachers' predicted labels. Several teachers'
temperature-softened distributions are averaged. ``alpha: 0`` needs no teacher at all.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from compbench.artifact import ModelArtifact
from compbench.encoding import EncodedRows, encode_rows, predict_logits
from compbench.hashing import stable_hash
from compbench.training import TrainConfig, fit, module_runner, validation_evaluator

Divergence = Literal["forward_kl", "reverse_kl", "js"]


class TeacherSignal(BaseModel):
    """How much of the teacher a model learns from, and in what form."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher signal; 0 = hard labels only")
    divergence: Divergence = "forward_kl"
    targets: Literal["soft", "teacher_labels"] = Field("soft", description="soft: white-box probabilities; teacher_labels: black-box")


def divergence(name: Divergence, student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of D(teacher || student) (forward), D(student || teacher) (reverse), or JS."""
    kl = lambda log_p, log_q: F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # noqa: E731  KL(p || q)
    if name == "forward_kl":
        return kl(teacher_log_probs, student_log_probs)
    if name == "reverse_kl":
        return kl(student_log_probs, teacher_log_probs)
    mixture = torch.logsumexp(torch.stack([student_log_probs, teacher_log_probs]), dim=0) - torch.log(torch.tensor(2.0))
    return 0.5 * kl(teacher_log_probs, mixture) + 0.5 * kl(student_log_probs, mixture)


def ensemble_log_probs(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log of the mean over teachers (dim 1) of softmax(logits / T)."""
    log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(teacher_logits.shape[1])


def distillation_loss(student_logits, teacher_logits, labels, params: "TeacherSignal", regression: bool) -> torch.Tensor:
    """``alpha * teacher term + (1 - alpha) * label term``; with ``alpha == 0`` no teacher is needed.

    ``teacher_logits`` is (batch, classes) for one teacher or (batch, teachers, classes) for several.
    """
    label_term = F.mse_loss(student_logits.squeeze(-1), labels) if regression else F.cross_entropy(student_logits, labels)
    if params.alpha == 0:
        return label_term
    if teacher_logits.dim() == 2:
        teacher_logits = teacher_logits.unsqueeze(1)
    if regression:
        teacher_term = F.mse_loss(student_logits.squeeze(-1), teacher_logits.mean(dim=1).squeeze(-1))
    elif params.targets == "teacher_labels":
        teacher_term = F.cross_entropy(student_logits, ensemble_log_probs(teacher_logits, 1.0).argmax(dim=-1))
    else:
        t = params.temperature
        teacher_term = t * t * divergence(params.divergence, F.log_softmax(student_logits / t, dim=-1),
                                          ensemble_log_probs(teacher_logits, t))
    return params.alpha * teacher_term + (1 - params.alpha) * label_term



def teacher_logits(teacher: ModelArtifact, data, max_seq_len: int, reporter) -> np.ndarray:
    """A teacher's logits for every training row, from the rows as the teacher's own tokenizer
    encodes them; computed once per (teacher, training rows, length) and kept in the teacher's
    artifact folder, so every pipeline distilling from it reuses them."""
    cache = teacher.path / TEACHER_LOGITS_DIR / f"{stable_hash({'data': data.fingerprint, 'max_seq_len': max_seq_len})}.npy"
    if cache.is_file():
        reporter.log(f"  teacher logits for the training rows from cache ({teacher.path.name})")
        return np.load(cache)
    tokenizer = teacher.tokenizer()
    rows = encode_rows(tokenizer, data.task, data.train, max_seq_len)
    reporter.log(f"  teacher logits for {len(rows)} training rows ({teacher.path.name})")
    logits = predict_logits(module_runner(teacher.torch_model()), tokenizer, rows, batch_size=128)
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npy")
        np.save(tmp, logits)
        os.replace(tmp, cache)
    except OSError:          # a read-only shared cache: compute again next time
        pass
    return logits


TEACHER_LOGITS_DIR = "teacher-logits"


def train_against_teachers(model: torch.nn.Module, tokenizer, teachers: list[ModelArtifact], signal: TeacherSignal,
                           config: TrainConfig, ctx, *, keep_best: bool, matcher=None, description: str) -> dict:
    """Train ``model`` in place on the task's training rows with the distillation loss (plus
    ``matcher``'s intermediate-layer loss, if given); returns the lineage summary.

    ``config.max_seq_len`` follows the teacher's (``ctx.max_seq_len``) unless set explicitly.
    """
    task = ctx.data.task
    if "max_seq_len" not in config.model_fields_set:
        config = config.model_copy(update={"max_seq_len": ctx.max_seq_len})
    rows = encode_rows(tokenizer, task, ctx.data.train, config.max_seq_len)
    if signal.alpha > 0:
        logits = np.stack([teacher_logits(teacher, ctx.data, config.max_seq_len, ctx.reporter) for teacher in teachers], axis=1)
        rows = EncodedRows(rows.features, rows.labels, {"teacher_logits": logits})

    def loss_fn(module, batch):
        teacher = batch.pop("teacher_logits", None)
        labels = batch.pop("labels")
        outputs = module(**batch, **(matcher.output_flags if matcher else {}))
        loss = distillation_loss(outputs.logits, teacher, labels, signal, task.is_regression)
        return loss + matcher(outputs, batch) if matcher else loss

    evaluate, split = validation_evaluator(ctx.data, tokenizer, config.max_seq_len)
    result = fit(model, tokenizer, rows, config, loss_fn=loss_fn, evaluate=evaluate, keep_best=keep_best,
                 auxiliary=matcher, reporter=ctx.reporter, description=f"{task.name} {description}")
    ctx.reporter.log(f"  {task.name} {description}: best epoch {result.best_epoch}, history "
                     + ", ".join(f"{h['score']:.4f}" for h in result.history))
    return {"train_rows": len(rows), "steps": result.steps, "seconds": round(result.seconds, 1),
            "best_epoch": result.best_epoch, "history": result.history, "eval_split": split,
            "teachers": len(teachers) if signal.alpha > 0 else 0}
