"""The knowledge-distillation loss (Hinton et al. 2015) and its variants.

Loss: ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)`` with D
the forward KL (default), reverse KL or Jensen-Shannon divergence; for regression (STS-B)
``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, labels)``. ``targets:
teacher_labels`` is black-box: only the teachers' predicted labels. Several teachers'
temperature-softened distributions are averaged. ``alpha: 0`` needs no teacher at all.

Multi-label (labels a float multi-hot matrix): each label is its own yes/no distribution, the sigmoid of its
logit over T, so D is the two-outcome divergence averaged over labels and rows (as the label term, binary
cross-entropy, is); black-box targets are the labels whose averaged teacher probability is > 0.5.

Causal LMs (``token_distillation_loss``): the same loss per predicted token over the vocabulary, the label term
the next token's cross-entropy.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

Divergence = Literal["forward_kl", "reverse_kl", "js"]


class TeacherSignal(BaseModel):
    """How much of the teacher a model learns from, and in what form."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher signal; 0 = hard labels only")
    divergence: Divergence = "forward_kl"
    targets: Literal["soft", "teacher_labels"] = Field(
        "soft", description="soft: white-box probabilities; teacher_labels: black-box"
    )


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


def ensemble_label_log_probs(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label: per label, log of the mean over teachers (dim 1) of (1 - sigmoid, sigmoid)(logits / T), as
    (batch, labels, 2): each label a two-outcome distribution."""
    scaled = teacher_logits / temperature
    outcomes = torch.stack([F.logsigmoid(-scaled), F.logsigmoid(scaled)], dim=-1)
    return torch.logsumexp(outcomes, dim=1) - math.log(teacher_logits.shape[1])


def _label_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(batch, labels, 2): log (1 - sigmoid, sigmoid)(logits / T) of each label."""
    scaled = logits / temperature
    return torch.stack([F.logsigmoid(-scaled), F.logsigmoid(scaled)], dim=-1)


def infer_kind(labels: torch.Tensor, regression: bool) -> str:
    """The task kind the labels say: regression as told, a float (batch, labels) matrix multi-label, else
    single-label (class ids)."""
    if regression:
        return "regression"
    return "multi_label" if labels.dim() == 2 and labels.is_floating_point() else "single_label"


def distillation_loss(
    student_logits, teacher_logits, labels, params: "TeacherSignal", regression: bool, *, kind: str | None = None
) -> torch.Tensor:
    """``alpha * teacher term + (1 - alpha) * label term``; with ``alpha == 0`` no teacher is needed.

    ``teacher_logits`` is (batch, classes) for one teacher or (batch, teachers, classes) for several. ``kind``
    (``TaskSpec.kind``) defaults to what ``regression`` and the labels say (see ``infer_kind``).
    """
    kind = kind or infer_kind(labels, regression)
    if kind == "multi_label":
        return _multi_label_loss(student_logits, teacher_logits, labels, params)
    regression = kind == "regression"
    label_term = (
        F.mse_loss(student_logits.squeeze(-1), labels) if regression else F.cross_entropy(student_logits, labels)
    )
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


def _multi_label_loss(student_logits, teacher_logits, labels, params: "TeacherSignal") -> torch.Tensor:
    """The multi-label form (module docstring): per-label sigmoid distributions, BCE on the labels."""
    label_term = F.binary_cross_entropy_with_logits(student_logits, labels.to(student_logits.dtype))
    if params.alpha == 0:
        return label_term
    if teacher_logits.dim() == 2:
        teacher_logits = teacher_logits.unsqueeze(1)
    if params.targets == "teacher_labels":
        hard = (ensemble_label_log_probs(teacher_logits, 1.0)[..., 1] > math.log(0.5)).to(student_logits.dtype)
        teacher_term = F.binary_cross_entropy_with_logits(student_logits, hard)
    else:
        t = params.temperature   # the divergence summed over labels, averaged like the BCE label term
        teacher_term = t * t * divergence(params.divergence, _label_log_probs(student_logits, t),
                                          ensemble_label_log_probs(teacher_logits, t)) / student_logits.shape[-1]
    return params.alpha * teacher_term + (1 - params.alpha) * label_term


def token_distillation_loss(student_logits, teacher_logits, labels, params: "TeacherSignal") -> torch.Tensor:
    """Causal-LM form, per predicted token: ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) *
    CE(student, next token)`` averaged over the tokens that have a next token (``labels`` are the rows' token
    ids, -100 where nothing is scored; position t predicts label t + 1, as transformers shifts them).

    ``student_logits`` (batch, tokens, vocab); ``teacher_logits`` the same shape for one teacher or (batch,
    tokens, teachers, vocab) for several, None with ``alpha == 0``. Only the scored positions are softened,
    so the memory is a few copies of (scored tokens x vocab)."""
    targets = labels[:, 1:]
    scored = targets != -100
    student = student_logits[:, :-1][scored]                    # (scored tokens, vocab)
    label_term = F.cross_entropy(student.float(), targets[scored])
    if params.alpha == 0:
        return label_term
    teacher = teacher_logits[:, :-1][scored].float()
    if teacher.dim() == 2:
        teacher = teacher.unsqueeze(1)                          # (scored tokens, teachers, vocab)
    if params.targets == "teacher_labels":
        teacher_term = F.cross_entropy(student.float(), ensemble_log_probs(teacher, 1.0).argmax(dim=-1))
    else:
        t = params.temperature
        # batchmean over the (scored tokens, vocab) rows: the mean per-token divergence
        teacher_term = t * t * divergence(params.divergence, F.log_softmax(student.float() / t, dim=-1),
                                          ensemble_log_probs(teacher, t))
    return params.alpha * teacher_term + (1 - params.alpha) * label_term
