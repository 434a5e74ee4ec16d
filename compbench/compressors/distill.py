"""``distill``: knowledge distillation from the input model (the teacher) into a smaller student.

Loss (Hinton et al. 2015): ``alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)``
with D the forward KL (default), reverse KL or Jensen-Shannon divergence. For regression
(STS-B): ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, labels)``.
``targets: teacher_labels`` is black-box distillation: the student sees only the teacher's
predicted labels, never its probabilities. ``alpha: 0`` is the hard-label baseline (no teacher).
The teacher's logits are computed once per training row and looked up per batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from compbench.artifact import ModelArtifact, save_hf_artifact
from compbench.compressors.base import COMPRESSORS, CompressContext, Compressor
from compbench.encoding import EncodedRows, encode_rows, predict_logits
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
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3, learning_rate=1e-4))
    keep_best: bool = Field(True, description="keep the epoch with the best validation metric")


def divergence(name: Divergence, student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of D(teacher || student) (forward), D(student || teacher) (reverse), or JS."""
    kl = lambda log_p, log_q: F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # noqa: E731  KL(p || q)
    if name == "forward_kl":
        return kl(teacher_log_probs, student_log_probs)
    if name == "reverse_kl":
        return kl(student_log_probs, teacher_log_probs)
    mixture = torch.logsumexp(torch.stack([student_log_probs, teacher_log_probs]), dim=0) - torch.log(torch.tensor(2.0))
    return 0.5 * kl(teacher_log_probs, mixture) + 0.5 * kl(student_log_probs, mixture)


def distillation_loss(student_logits, teacher_logits, labels, params: DistillParams, regression: bool) -> torch.Tensor:
    """``alpha * teacher term + (1 - alpha) * label term``; with ``alpha == 0`` no teacher is needed."""
    label_term = F.mse_loss(student_logits.squeeze(-1), labels) if regression else F.cross_entropy(student_logits, labels)
    if params.alpha == 0:
        return label_term
    if regression:
        teacher_term = F.mse_loss(student_logits.squeeze(-1), teacher_logits.squeeze(-1))
    elif params.targets == "teacher_labels":
        teacher_term = F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))
    else:
        t = params.temperature
        teacher_term = t * t * divergence(params.divergence, F.log_softmax(student_logits / t, dim=-1),
                                          F.log_softmax(teacher_logits / t, dim=-1))
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
            rows = EncodedRows(rows.features, rows.labels, {"teacher_logits": teacher_logits(model, tokenizer, rows, ctx)})

        def loss_fn(module, batch):
            teacher = batch.pop("teacher_logits", None)
            labels = batch.pop("labels")
            logits = module(**batch).logits
            return distillation_loss(logits, teacher, labels, params, task.is_regression)

        evaluate, split = validation_evaluator(ctx.data, tokenizer, config.max_seq_len)
        result = fit(student, tokenizer, rows, config, loss_fn=loss_fn, evaluate=evaluate, keep_best=params.keep_best,
                     reporter=ctx.reporter, description=f"{task.name} distill")
        summary = {"train_rows": len(rows), "steps": result.steps, "seconds": round(result.seconds, 1),
                   "best_epoch": result.best_epoch, "history": result.history, "eval_split": split}
        ctx.reporter.log(f"  {task.name} distill: best epoch {result.best_epoch}, history "
                         + ", ".join(f"{h['score']:.4f}" for h in result.history))
        return save_hf_artifact(ctx.work_dir, student, tokenizer, task=model.task, lineage=[summary])


def teacher_logits(teacher: ModelArtifact, tokenizer, rows: EncodedRows, ctx: CompressContext):
    """The teacher's logits for every training row, computed once (the data is not augmented)."""
    ctx.reporter.log(f"  teacher logits for {len(rows)} training rows")
    return predict_logits(module_runner(teacher.torch_model()), tokenizer, rows, batch_size=128)
