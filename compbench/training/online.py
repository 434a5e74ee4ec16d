"""Online distillation: deep mutual learning (Zhang et al. 2018). Several students train together; each learns
from the labels (and the teacher, when ``alpha > 0``) and from the other students' current predictions:

``loss_i = distillation_loss_i + weight * mean_{j != i} KL(p_j || p_i)``

with the peers' distributions held fixed in student i's term (each side is trained by its own term), at
temperature 1; for regression the squared distance to each peer's score. The kept student is the first (the
model ``fit`` trains); the peers are trained alongside it, as ``fit``'s auxiliary modules, and dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compbench.training.kd import distillation_loss


def mutual_term(own: torch.Tensor, others: list[torch.Tensor], regression: bool) -> torch.Tensor:
    """mean over ``others`` (held fixed) of KL(p_other || p_own), or of the squared score distance."""
    terms = []
    for other in others:
        other = other.detach()
        if regression:
            terms.append(F.mse_loss(own.squeeze(-1), other.squeeze(-1)))
        else:
            terms.append(F.kl_div(F.log_softmax(own, dim=-1), F.log_softmax(other, dim=-1), log_target=True,
                                  reduction="batchmean"))
    return torch.stack(terms).mean()


class Peers(torch.nn.Module):
    """The students trained alongside the kept one, and the weight of the mutual terms."""

    def __init__(self, students: list[torch.nn.Module], weight: float) -> None:
        super().__init__()
        self.students = torch.nn.ModuleList(students)
        self.weight = weight

    def loss(self, kept_logits: torch.Tensor, batch: dict, teacher, labels, signal, regression: bool) -> torch.Tensor:
        """The mutual term of the kept student, plus every peer's whole loss (its own distillation loss and its
        mutual term), for a batch whose kept-student logits are ``kept_logits``."""
        logits = [kept_logits, *(student(**batch).logits for student in self.students)]
        total = self.weight * mutual_term(kept_logits, logits[1:], regression)
        for i, own in enumerate(logits[1:], start=1):
            others = logits[:i] + logits[i + 1:]
            total = total + distillation_loss(own, teacher, labels, signal, regression)
            total = total + self.weight * mutual_term(own, others, regression)
        return total
