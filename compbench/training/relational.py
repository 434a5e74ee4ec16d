"""Relation-based knowledge: the student learns how the teacher's representations of a batch's rows relate to
one another, not the representations themselves (so the widths need not agree).

- ``rkd_distance`` (Park et al. 2019, RKD-D): the Huber loss between the rows' pairwise Euclidean distances,
  each side's divided by its mean distance;
- ``rkd_angle`` (RKD-A): the Huber loss between the cosines of the angles each triple of rows forms;
- ``rkd``: distance + 2 x angle (the paper's weights, 25 and 50, in proportion);
- ``similarity`` (Tung & Mori 2019, similarity-preserving KD): the squared Frobenius distance between the rows'
  L2-normalised Gram matrices, over batch size squared.

The representation of a row is its last hidden state averaged over its real tokens (:func:`pooled`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Relation = Literal["rkd", "rkd_distance", "rkd_angle", "similarity"]


def pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(rows, width): each row's hidden states averaged over the positions its mask marks as tokens."""
    mask = attention_mask.to(hidden.dtype)[:, :, None]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _distances(features: torch.Tensor) -> torch.Tensor:
    """Pairwise distances divided by their mean over distinct pairs (RKD's normalisation)."""
    distances = torch.cdist(features, features)
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)
    return distances / distances[off_diagonal].mean().clamp(min=1e-12)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = _distances(teacher)
    return F.smooth_l1_loss(_distances(student), target)


def _angles(features: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j of every triple (i, j, k): <(x_i - x_j)/|..|, (x_k - x_j)/|..|>, as (n, n, n)."""
    differences = F.normalize(features[None, :, :] - features[:, None, :], p=2, dim=2)   # [j, i] = x_i - x_j
    return torch.bmm(differences, differences.transpose(1, 2))


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = _angles(teacher)
    return F.smooth_l1_loss(_angles(student), target)


def similarity_preserving(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    def gram(features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features @ features.T, p=2, dim=1)

    with torch.no_grad():
        target = gram(teacher)
    return ((gram(student) - target) ** 2).sum() / len(student) ** 2


def relational_loss(name: Relation, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The relation loss ``name`` between (rows, width) representations of one batch (module docstring)."""
    student, teacher = student.float(), teacher.float()
    if name == "rkd":
        return rkd_distance(student, teacher) + 2.0 * rkd_angle(student, teacher)
    return {"rkd_distance": rkd_distance, "rkd_angle": rkd_angle,
            "similarity": similarity_preserving}[name](student, teacher)
