"""Training against teachers: each teacher's logits on the training rows, computed once and kept
beside the teacher, and the shared loop run with the distillation loss (used by ``distill`` and by
recovery fine-tuning after pruning and SVD).

A language-modeling task trains on its text cut into ``max_seq_len``-token rows with the token-level loss
(``kd.token_distillation_loss``); the teachers' logits span the vocabulary at every token (SmolLM2: 49,152 a
token), far too many to keep, so each teacher runs on each batch as it comes."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.common.sealing import load_sealed_array, save_sealed_array
from compbench.config.training import TrainConfig
from compbench.models.artifact import TEACHER_LOGITS, ModelArtifact
from compbench.tasks.encoding import (
    EncodedRows,
    encode_rows,
    encode_training_rows,
    encode_unlabeled_rows,
    predict_logits,
)
from compbench.training.evaluation import (
    INFERENCE_BATCH_SIZE,
    lower_is_better,
    module_runner,
    rows_evaluator,
    validation_evaluator,
)
from compbench.training.kd import TeacherSignal, distillation_loss, token_distillation_loss
from compbench.training.loop import fit
from compbench.training.online import Peers
from compbench.training.transfer import TransferConfig, rows_digest, transfer_rows


def teacher_logits(teacher: ModelArtifact, data, max_seq_len: int, reporter, *, transfer=None) -> np.ndarray:
    """A teacher's logits for every training row (or, given ``transfer``, for those unlabeled rows), from the
    rows as the teacher's own tokenizer encodes them; computed once per (teacher, rows, length) and kept in the
    teacher's artifact folder, so every pipeline distilling from it reuses them."""
    rows_key = {"data": data.fingerprint} if transfer is None else {"transfer": rows_digest(transfer)}
    key = stable_hash({**rows_key, "max_seq_len": max_seq_len, "teacher": teacher.content_hash})
    which = "training" if transfer is None else "transfer"
    cache = teacher.path / TEACHER_LOGITS / f"{key}.npy"
    cached = load_sealed_array(cache)
    if cached is not None:
        reporter.log(f"  teacher logits for the {which} rows from cache ({teacher.path.name})")
        return cached
    tokenizer = teacher.tokenizer()
    rows = (encode_rows(tokenizer, data.task, data.train, max_seq_len) if transfer is None
            else encode_unlabeled_rows(tokenizer, data.task, transfer, max_seq_len))
    reporter.log(f"  teacher logits for {len(rows)} {which} rows ({teacher.path.name})")
    logits = predict_logits(module_runner(teacher.torch_model()), tokenizer, rows, batch_size=INFERENCE_BATCH_SIZE)
    try:
        save_sealed_array(cache, logits)
    except OSError:          # a read-only shared cache: compute again next time
        pass
    return logits


class EpochSelection(BaseModel):
    """Which epoch's weights a trained model ends with: the last, or (``keep_best``) the one scoring best on
    training rows held out for it, never on the evaluation split that its rows report."""

    model_config = ConfigDict(extra="forbid")

    keep_best: bool = Field(True, description="end on the epoch that scores best on held-out training rows")
    selection_rows: int = Field(512, ge=1, description="training rows held out (seeded) to choose the epoch on "
                                                       "(at most a fifth of them); they are not trained on")


def held_out(n_rows: int, wanted: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows to train on, rows held out to select on): a seeded ``wanted`` of ``n_rows``, at most a fifth."""
    count = max(1, min(wanted, n_rows // 5))
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[count:]), np.sort(order[:count])


def train_against_teachers(model: torch.nn.Module, tokenizer, teachers: list[ModelArtifact], signal: TeacherSignal,
                           config: TrainConfig, ctx, *, selection: EpochSelection, matcher=None,
                           description: str, transfer: TransferConfig | None = None,
                           peers: Peers | None = None) -> dict:
    """Train ``model`` in place on the task's training rows with the distillation loss (plus
    ``matcher``'s intermediate-layer loss, if given); returns the lineage summary. ``transfer``'s rows (text
    only, ``training.transfer``) are trained on too, with the teachers' signal alone.

    ``config.max_seq_len`` follows the teacher's (``ctx.max_seq_len``) unless set explicitly. With
    ``selection.keep_best`` a seeded slice of the training rows is held out (not trained on) and the epoch
    that scores best there is kept (a language-modeling task: the lowest perplexity); otherwise every epoch is
    scored on the evaluation split, for the log only.
    """
    task = ctx.data.task
    if "max_seq_len" not in config.model_fields_set:
        config = config.model_copy(update={"max_seq_len": ctx.max_seq_len})
    rows = encode_training_rows(tokenizer, task, ctx.data.train, config.max_seq_len)
    if task.is_language_modeling:
        loss_fn = token_loss(teachers if signal.alpha > 0 else [], signal, matcher)
    else:
        if signal.alpha > 0:
            logits = np.stack(
                [teacher_logits(teacher, ctx.data, config.max_seq_len, ctx.reporter) for teacher in teachers], axis=1
            )
            rows = EncodedRows(rows.features, rows.labels, {"teacher_logits": logits})
        loss_fn = row_loss(signal, task.is_regression, matcher, peers)
    record: dict = {}
    if selection.keep_best:
        trained_on, selected_on = held_out(len(rows), selection.selection_rows, ctx.seed)
        evaluate, split = rows_evaluator(task, tokenizer, rows.subset(selected_on)), "train (held out)"
        held = (rows.labels[selected_on].tolist() if task.is_language_modeling      # text chunks: their tokens
                else ctx.data.train.iloc[selected_on].to_dict("list"))
        record["selected_on"] = {"split": "train", "rows": len(selected_on), "seed": ctx.seed,
                                 "rows_digest": stable_hash(held)}
        rows = rows.subset(trained_on)
    else:
        evaluate, split = validation_evaluator(ctx.data, tokenizer, config.max_seq_len)
    if transfer is not None:
        # built once the held-out rows are set aside: no edited copy of a row the epoch is chosen on is trained on
        trained = ctx.data.train if not selection.keep_best else ctx.data.train.iloc[trained_on]
        frame = transfer_rows(transfer, ctx.data, ctx.base_dir, ctx.seed, train=trained)
        extra = encode_unlabeled_rows(tokenizer, task, frame, config.max_seq_len)
        logits = np.stack([teacher_logits(teacher, ctx.data, config.max_seq_len, ctx.reporter, transfer=frame)
                           for teacher in teachers], axis=1)
        rows = rows + EncodedRows(extra.features, extra.labels, {"teacher_logits": logits})
        record["transfer_rows"] = len(extra)
        ctx.reporter.log(f"  {task.name} {description}: {len(extra)} teacher-labelled transfer rows")

    trained_alongside = torch.nn.ModuleList([m for m in (matcher, peers) if m is not None])
    result = fit(model, tokenizer, rows, config, loss_fn=loss_fn, evaluate=evaluate, keep_best=selection.keep_best,
                 lower_is_better=lower_is_better(task), auxiliary=trained_alongside, reporter=ctx.reporter,
                 description=f"{task.name} {description}")
    ctx.reporter.log(f"  {task.name} {description}: best epoch {result.best_epoch} on {split}, history "
                     + ", ".join(f"{h['score']:.4f}" for h in result.history))
    return {"train_rows": len(rows), "steps": result.steps, "seconds": round(result.seconds, 1),
            "best_epoch": result.best_epoch, "history": result.history, "eval_split": split, **record,
            "teachers": len(teachers) if signal.alpha > 0 else 0,
            **({"peers": len(peers.students)} if peers is not None else {})}


def row_loss(signal: TeacherSignal, regression: bool, matcher=None, peers: Peers | None = None):
    """The loss of one batch of classifier rows, the teachers' logits looked up with the rows; with ``peers``,
    every peer's loss too, each with its mutual term (online distillation)."""
    def loss_fn(module, batch):
        teacher = batch.pop("teacher_logits", None)
        labels = batch.pop("labels")
        outputs = module(**batch, **(matcher.output_flags if matcher else {}))
        loss = distillation_loss(outputs.logits, teacher, labels, signal, regression)
        if peers is not None:
            loss = loss + peers.loss(outputs.logits, batch, teacher, labels, signal, regression)
        return loss + matcher(outputs, batch) if matcher else loss
    return loss_fn


def token_loss(teachers: list[ModelArtifact], signal: TeacherSignal, matcher=None):
    """The loss of one batch of causal-LM rows, each teacher run (frozen, without autograd) on the batch."""
    if matcher is not None:
        raise UnsupportedError("layer matching (hidden_weight, attention_weight) is not built for causal LMs; "
                               "distil them with the token-level loss alone")
    modules = [teacher.torch_model().eval() for teacher in teachers]

    def loss_fn(module, batch):
        labels = batch.pop("labels")
        teacher = None
        if modules:
            with torch.no_grad():
                found = [teacher_module(**batch).logits for teacher_module in modules]
            teacher = found[0] if len(found) == 1 else torch.stack(found, dim=2)
        return token_distillation_loss(module(**batch).logits, teacher, labels, signal)
    return loss_fn
