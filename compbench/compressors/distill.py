"""``distill``: knowledge distillation from the input model (the teacher) into a smaller student.

Loss (Hinton et al. 2015): ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)``
with D the forward KL (default), reverse KL or Jensen-Shannon divergence. For regression
(STS-B): ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, labels)``.
``targets: teacher_labels`` is black-box distillation: the student sees only the teacher's
predicted labels, never its probabilities. ``alpha: 0`` is the hard-label baseline (no teacher).
``teacher_seeds`` adds teachers (the suite's teacher fine-tuned again with those seeds) whose
temperature-softened distributions are averaged with the input model's (multi-teacher).
``hidden_weight`` / ``attention_weight`` add intermediate-layer matching (``layer_matching``).
The teachers' logits are computed once per training row and looked up per batch.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.artifact import ModelArtifact, save_hf_artifact
from compbench.compressors.base import COMPRESSORS, CompressContext, Compressor
from compbench.encoding import EncodedRows, encode_rows, predict_logits
from compbench.layer_matching import LayerMatcher
from compbench.students import StudentSpec, build_student
from compbench.training import TrainConfig, fit, module_runner, validation_evaluator

Divergence = Literal["forward_kl", "reverse_kl", "js"]


class DistillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: StudentSpec
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher signal; 0 = hard labels only")
    divergence: Divergence = "forward_kl"
    targets: Literal["soft", "teacher_labels"] = Field("soft", description="soft: white-box probabilities; teacher_labels: black-box")
    teacher_seeds: list[int] = Field(default_factory=list, description="further teachers: the task teacher fine-tuned again "
                                     "with each seed; all teachers' softened distributions are averaged")
    hidden_weight: float = Field(0.0, ge=0, description="weight of hidden-state MSE (learned projection when widths differ)")
    attention_weight: float = Field(0.0, ge=0, description="weight of attention-map MSE (needs equal head counts)")
    layer_map: dict[int, int] | None = Field(None, description="student layer -> teacher layer for the matching; "
                                             "default: uniform, last layers meet")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3, learning_rate=1e-4))
    keep_best: bool = Field(True, description="keep the epoch with the best validation metric")

    @model_validator(mode="after")
    def _teacher_signal_needed(self) -> "DistillParams":
        if self.alpha == 0 and self.teacher_seeds:
            raise ValueError("teacher_seeds: alpha 0 (hard labels) uses no teacher; give alpha > 0 or drop teacher_seeds")
        if self.layer_map is not None and self.hidden_weight == 0 and self.attention_weight == 0:
            raise ValueError("layer_map: no layer matching is on; set hidden_weight or attention_weight > 0")
        return self


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


def distillation_loss(student_logits, teacher_logits, labels, params: DistillParams, regression: bool) -> torch.Tensor:
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


@COMPRESSORS.register
class Distill(Compressor):
    name = "distill"
    Params = DistillParams
    code_version = "1"

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        params = self.params
        task = ctx.data.task
        config = params.train if "max_seq_len" in params.train.model_fields_set else params.train.model_copy(update={"max_seq_len": ctx.max_seq_len})
        student, tokenizer = build_student(model, params.student, seed=config.seed)
        rows = encode_rows(tokenizer, task, ctx.data.train, config.max_seq_len)
        if params.alpha > 0:
            teachers = [model, *(ctx.teacher_with_seed(seed) for seed in params.teacher_seeds)]
            logits = np.stack([teacher_logits(teacher, ctx, config.max_seq_len) for teacher in teachers], axis=1)
            rows = EncodedRows(rows.features, rows.labels, {"teacher_logits": logits})
        matcher = None
        if params.hidden_weight > 0 or params.attention_weight > 0:
            check_same_vocabulary(tokenizer, model.tokenizer())
            matcher = LayerMatcher(model.torch_model(), student, params.layer_map, params.hidden_weight, params.attention_weight)

        def loss_fn(module, batch):
            teacher = batch.pop("teacher_logits", None)
            labels = batch.pop("labels")
            outputs = module(**batch, **(matcher.output_flags if matcher else {}))
            loss = distillation_loss(outputs.logits, teacher, labels, params, task.is_regression)
            return loss + matcher(outputs, batch) if matcher else loss

        evaluate, split = validation_evaluator(ctx.data, tokenizer, config.max_seq_len)
        result = fit(student, tokenizer, rows, config, loss_fn=loss_fn, evaluate=evaluate, keep_best=params.keep_best,
                     auxiliary=matcher, reporter=ctx.reporter, description=f"{task.name} distill")
        summary = {"train_rows": len(rows), "steps": result.steps, "seconds": round(result.seconds, 1),
                   "best_epoch": result.best_epoch, "history": result.history, "eval_split": split,
                   "teachers": 1 + len(params.teacher_seeds) if params.alpha > 0 else 0}
        if matcher:
            summary["layer_map"] = [[student_layer, teacher_layer] for student_layer, teacher_layer in matcher.layer_map.items()]
        ctx.reporter.log(f"  {task.name} distill: best epoch {result.best_epoch}, history "
                         + ", ".join(f"{h['score']:.4f}" for h in result.history))
        return save_hf_artifact(ctx.work_dir, student, tokenizer, task=model.task, lineage=[summary])


def teacher_logits(teacher: ModelArtifact, ctx: CompressContext, max_seq_len: int) -> np.ndarray:
    """A teacher's logits for every training row, computed once (the data is not augmented),
    from the rows as the teacher's own tokenizer encodes them."""
    tokenizer = teacher.tokenizer()
    rows = encode_rows(tokenizer, ctx.data.task, ctx.data.train, max_seq_len)
    ctx.reporter.log(f"  teacher logits for {len(rows)} training rows ({teacher.path.name})")
    return predict_logits(module_runner(teacher.torch_model()), tokenizer, rows, batch_size=128)


def check_same_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Layer matching feeds the student's batches to the teacher: both must tokenise alike."""
    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ValueError("hidden_weight/attention_weight: layer matching needs a student with the teacher's tokenizer; "
                         "this student model has another vocabulary")
