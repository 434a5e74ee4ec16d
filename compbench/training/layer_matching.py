"""Feature- and relation-based distillation: hidden states matched by MSE through learned linear
projections where the widths differ (FitNets, TinyBERT), and attention maps matched by MSE
where the head counts agree, between mapped student and teacher layers, padding excluded; and the
relations between a batch's pooled representations (``relational``: RKD, similarity-preserving)."""

from __future__ import annotations

import math

import torch

from compbench.models.families import family_of
from compbench.training.relational import Relation, pooled, relational_loss


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer i -> teacher layer (i + 1) * L_t / L_s - 1: the last layers meet (TinyBERT)."""
    return {
        i: math.floor((i + 1) * teacher_layers / student_layers + 0.5) - 1 for i in range(student_layers)
    }  # half up


def checked_layer_map(layer_map: dict[int, int] | None, student_layers: int, teacher_layers: int) -> dict[int, int]:
    if layer_map is None:
        return uniform_layer_map(student_layers, teacher_layers)
    for side, indices, depth in (
        ("student", list(layer_map), student_layers),
        ("teacher", list(layer_map.values()), teacher_layers),
    ):
        bad = [index for index in indices if not 0 <= index < depth]
        if bad:
            raise ValueError(f"layer_map: {side} layers {bad} do not exist: the {side} has layers 0..{depth - 1}")
    return dict(layer_map)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` (broadcast to their shape) is 1."""
    mask = mask.expand_as(predicted)
    return ((predicted - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)


class LayerMatcher(torch.nn.Module):
    """``hidden_weight * MSE(P_l h_student, h_teacher) + attention_weight * MSE(A_student, A_teacher)``,
    averaged over the mapped layer pairs, plus ``relational_weight * R(pooled student, pooled teacher)`` with R
    the ``relation`` loss of ``relational``. Its only parameters are the projections P_l (one per
    mapped student layer, identity when the widths agree); the teacher is run frozen per batch."""

    def __init__(
        self, teacher, student, layer_map: dict[int, int] | None, hidden_weight: float, attention_weight: float,
        relational_weight: float = 0.0, relation: Relation = "rkd",
    ) -> None:
        super().__init__()
        self._teacher = (teacher.eval(),)   # a tuple: not a submodule, so never trained nor saved
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.relational_weight, self.relation = relational_weight, relation
        # sizes from each model's family table (DistilBERT counts them in n_layers, dim, n_heads); layers are
        # those a forward pass runs (hidden_states and attentions have one entry per layer, ALBERT's too)
        student_family, teacher_family = family_of(student), family_of(teacher)
        self.layer_map = checked_layer_map(
            layer_map, student_family.num_layers(student.config), teacher_family.num_layers(teacher.config)
        )
        if attention_weight > 0:
            heads = (student_family.num_heads(student.config), teacher_family.num_heads(teacher.config))
            if heads[0] != heads[1]:
                raise ValueError(
                    f"attention_weight: attention maps match only with equal head counts; student has {heads[0]}, "
                    f"teacher {heads[1]} (set attention_weight: 0 or num_attention_heads: {heads[1]})"
                )
            # BERT's SDPA attention falls back to the eager kernel (warning once) when maps are asked for
        widths = (student_family.hidden_size(student.config), teacher_family.hidden_size(teacher.config))
        self.projections = torch.nn.ModuleDict(
            {str(layer): torch.nn.Linear(*widths) for layer in self.layer_map}
            if hidden_weight > 0 and widths[0] != widths[1]
            else {}
        )

    @property
    def output_flags(self) -> dict[str, bool]:
        return {"output_hidden_states": self.hidden_weight > 0 or self.relational_weight > 0,
                "output_attentions": self.attention_weight > 0}

    def forward(self, student_outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            teacher_outputs = self._teacher[0](**batch, **self.output_flags)
        tokens = batch["attention_mask"].to(student_outputs.logits.dtype)
        total = student_outputs.logits.new_zeros(())
        relational = total
        if self.relational_weight > 0:
            relational = self.relational_weight * relational_loss(
                self.relation, pooled(student_outputs.hidden_states[-1], tokens),
                pooled(teacher_outputs.hidden_states[-1], tokens))
        if self.hidden_weight == 0 and self.attention_weight == 0:
            return relational
        for student_layer, teacher_layer in self.layer_map.items():
            if self.hidden_weight > 0:
                hidden = student_outputs.hidden_states[student_layer + 1]       # [0] is the embeddings
                if self.projections:
                    hidden = self.projections[str(student_layer)](hidden)
                total = total + self.hidden_weight * masked_mse(
                    hidden, teacher_outputs.hidden_states[teacher_layer + 1], tokens[:, :, None])
            if self.attention_weight > 0:
                pairs = tokens[:, None, :, None] * tokens[:, None, None, :]      # valid query x valid key
                total = total + self.attention_weight * masked_mse(
                    student_outputs.attentions[student_layer], teacher_outputs.attentions[teacher_layer], pairs)
        return total / len(self.layer_map) + relational
