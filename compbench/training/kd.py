"""The knowledge-distillation loss (Hinton et al. 2015) and its variants.

Loss: ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)`` with D (teacher p,
student q) the forward KL(p||q) (default, mode-covering), the reverse KL(q||p) (mode-seeking, MiniLLM), the
generalized Jensen-Shannon divergence ``beta KL(p||m) + (1 - beta) KL(q||m)``, ``m = beta p + (1 - beta) q`` (GKD,
Agarwal et al. 2024; beta 0.5 is the plain JSD), or the skew KL ``KL(p || skew p + (1 - skew) q)`` and skew
reverse KL ``KL(q || skew q + (1 - skew) p)`` (DistiLLM, Ko et al. 2024); for regression (STS-B)
``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, labels)``. ``targets:
teacher_labels`` is black-box: only the teachers' predicted labels. Several teachers'
temperature-softened distributions are averaged. ``alpha: 0`` needs no teacher at all. Rows without a label
(teacher-made transfer data, ``training.transfer``) count in the teacher term only: the label term averages over
the batch's labelled rows.

Multi-label (labels a float multi-hot matrix): each label is its own yes/no distribution, the sigmoid of its
logit over T, so D is the two-outcome divergence averaged over labels and rows (as the label term, binary
cross-entropy, is); black-box targets are the labels whose averaged teacher probability is > 0.5.

Causal LMs (``token_distillation_loss``): the same loss per predicted token over the vocabulary, the label term
the next token's cross-entropy. With ``top_k`` the teacher's distribution is kept only on its k most likely
tokens per position, the rest of its mass in one "any other token" outcome, and the student's is folded the same
way (a k + 1-outcome distribution each; exact as k reaches the vocabulary), so only k logits per token need be
kept of the teacher.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from compbench.tasks.encoding import labelled_mask

Divergence = Literal["forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl"]


class TeacherSignal(BaseModel):
    """How much of the teacher a model learns from, and in what form."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher signal; 0 = hard labels only")
    divergence: Divergence = "forward_kl"
    beta: float = Field(0.5, gt=0, lt=1, description="divergence js: the teacher's weight in the mixture")
    skew: float = Field(0.1, gt=0, lt=1, description="skew_kl / skew_reverse_kl: the weight of the distribution "
                                                     "the divergence is taken from, in the mixture")
    top_k: int | None = Field(None, ge=1, description="causal LMs: the teacher's k most likely tokens per "
                                                      "position, the rest as one outcome (default: all)")
    targets: Literal["soft", "teacher_labels"] = Field(
        "soft", description="soft: white-box probabilities; teacher_labels: black-box"
    )


def divergence(name: Divergence, student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, *,
               beta: float = 0.5, skew: float = 0.1) -> torch.Tensor:
    """Mean over the batch (rows of the last dimension's distributions) of the divergence ``name`` between the
    teacher p and the student q (module docstring): KL(p||q), KL(q||p), JSD_beta, or a skew KL."""
    kl = lambda log_p, log_q: F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # noqa: E731  KL(p || q)
    if name == "forward_kl":
        return kl(teacher_log_probs, student_log_probs)
    if name == "reverse_kl":
        return kl(student_log_probs, teacher_log_probs)
    if name == "js":
        mixture = _mixture(teacher_log_probs, student_log_probs, beta)
        return beta * kl(teacher_log_probs, mixture) + (1 - beta) * kl(student_log_probs, mixture)
    if name == "skew_kl":
        return kl(teacher_log_probs, _mixture(teacher_log_probs, student_log_probs, skew))
    if name == "skew_reverse_kl":
        return kl(student_log_probs, _mixture(student_log_probs, teacher_log_probs, skew))
    raise ValueError(f"unknown divergence {name!r}")


def _mixture(log_p: torch.Tensor, log_q: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight * p + (1 - weight) * q), computed in log space."""
    return torch.logaddexp(log_p + math.log(weight), log_q + math.log1p(-weight))


def top_k_folded(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions over the teacher's ``k`` most likely tokens of each row plus one outcome for every other
    token: (teacher, student) log-probabilities of shape (rows, k + 1). The rest's mass is floored at 1e-12 so
    its log stays finite (its weight in any divergence is then ~0 where the top k hold everything)."""
    k = min(k, teacher_log_probs.shape[-1])
    top, index = teacher_log_probs.topk(k, dim=-1)

    def fold(kept: torch.Tensor) -> torch.Tensor:
        rest = torch.log((-torch.expm1(torch.logsumexp(kept, dim=-1, keepdim=True))).clamp(min=1e-12))
        return torch.cat([kept, rest], dim=-1)

    return fold(top), fold(student_log_probs.gather(-1, index))


def signal_divergence(params: "TeacherSignal", student_log_probs: torch.Tensor,
                      teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """``divergence`` as ``params`` names and shapes it."""
    return divergence(params.divergence, student_log_probs, teacher_log_probs, beta=params.beta, skew=params.skew)


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
    label_term = _label_term(student_logits, labels, regression)
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
        teacher_term = t * t * signal_divergence(params, F.log_softmax(student_logits / t, dim=-1),
                                                 ensemble_log_probs(teacher_logits, t))
    return params.alpha * teacher_term + (1 - params.alpha) * label_term


def _label_term(student_logits, labels, regression: bool, multi_label: bool = False) -> torch.Tensor:
    """The loss on the labels, over the rows that carry one (transfer rows do not: ``encoding.unlabeled``); 0 for
    a batch of transfer rows only."""
    labelled = labelled_mask(labels)
    if not bool(labelled.any()):
        return student_logits.sum() * 0.0
    student_logits, labels = student_logits[labelled], labels[labelled]
    if multi_label:
        return F.binary_cross_entropy_with_logits(student_logits, labels.to(student_logits.dtype))
    return F.mse_loss(student_logits.squeeze(-1), labels) if regression else F.cross_entropy(student_logits, labels)


def _multi_label_loss(student_logits, teacher_logits, labels, params: "TeacherSignal") -> torch.Tensor:
    """The multi-label form (module docstring): per-label sigmoid distributions, BCE on the labels."""
    label_term = _label_term(student_logits, labels, False, multi_label=True)
    if params.alpha == 0:
        return label_term
    if teacher_logits.dim() == 2:
        teacher_logits = teacher_logits.unsqueeze(1)
    if params.targets == "teacher_labels":
        hard = (ensemble_label_log_probs(teacher_logits, 1.0)[..., 1] > math.log(0.5)).to(student_logits.dtype)
        teacher_term = F.binary_cross_entropy_with_logits(student_logits, hard)
    else:
        t = params.temperature   # the divergence summed over labels, averaged like the BCE label term
        teacher_term = t * t * signal_divergence(params, _label_log_probs(student_logits, t),
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
        student_log_probs = F.log_softmax(student.float() / t, dim=-1)
        teacher_log_probs = ensemble_log_probs(teacher, t)
        if params.top_k is not None:
            teacher_log_probs, student_log_probs = top_k_folded(teacher_log_probs, student_log_probs, params.top_k)
        # batchmean over the (scored tokens, vocab) rows: the mean per-token divergence
        teacher_term = t * t * signal_divergence(params, student_log_probs, teacher_log_probs)
    return params.alpha * teacher_term + (1 - params.alpha) * label_term
