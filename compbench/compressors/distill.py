"""``distill``: knowledge distillation from the input model (the teacher) into a smaller student.

The loss and its variants (divergence, black-box ``targets: teacher_labels``, ``alpha: 0`` for
the hard-label baseline) are ``kd.TeacherSignal``'s. ``teacher_seeds`` adds teachers (the
suite's teacher fine-tuned again with those seeds) whose temperature-softened distributions
are averaged with the input model's (multi-teacher). ``hidden_weight`` / ``attention_weight``
add intermediate-layer matching (``layer_matching``), ``relational_weight`` a relation loss between the rows'
pooled representations (``relational``: RKD, similarity-preserving). ``transfer`` adds rows without a human label
that the teacher labels (``training.transfer``: the train rows a limit left out, a text file, augmented copies).
``peers`` trains further students alongside, each learning from the others too (online distillation, deep mutual
learning: ``training.online``); ``generations`` trains students in turn, each from the one before (born-again
networks; a student of the teacher's own shape, e.g. ``student: {model: minilm-l6}``, is self-distillation).
The teachers' logits are computed once per training row and looked up per batch.

Causal LMs (a ``language_modeling`` task): the student (e.g. ``student: {layers: [0, 2, 4, ...]}``, a subset
of the teacher's decoder layers) learns from the teacher's next-token distributions over the vocabulary at
every token (``kd.token_distillation_loss``: forward KL at temperature T, T^2-scaled, mixed with the LM
cross-entropy by ``alpha``), on the training text cut into ``max_seq_len``-token rows; the teacher runs on
each batch (its logits over a 49,152-token vocabulary are too many to keep). ``keep_best`` keeps the epoch
with the lowest perplexity on held-out rows. A student with another tokenizer, layer matching and further
teachers are refused for causal LMs.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
from pydantic import Field, model_validator

from compbench.common.errors import UnsupportedError
from compbench.compressors.base import CompressContext, Compressor
from compbench.config.training import TrainConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.training.kd import TeacherSignal
from compbench.training.layer_matching import LayerMatcher
from compbench.training.online import Peers
from compbench.training.relational import Relation
from compbench.training.sequence import SequenceConfig, generated_set, prompts_of
from compbench.training.students import StudentSpec, build_student
from compbench.training.teachers import EpochSelection, train_against_teachers
from compbench.training.transfer import REST, TransferConfig, file_digest

PEER_SEED_STEP = 1000        # peer k of a generation starts from seed + k * this: no two students share a seed


class DistillParams(TeacherSignal, EpochSelection):
    student: StudentSpec
    teacher_seeds: list[int] = Field(
        default_factory=list,
        description="further teachers: the task teacher fine-tuned again "
        "with each seed; all teachers' softened distributions are averaged",
    )
    hidden_weight: float = Field(
        0.0, ge=0, description="weight of hidden-state MSE (learned projection when widths differ)"
    )
    attention_weight: float = Field(0.0, ge=0, description="weight of attention-map MSE (needs equal head counts)")
    relational_weight: float = Field(0.0, ge=0, description="weight of the relation loss between the rows' pooled "
                                     "representations of a batch (any widths)")
    relation: Relation = Field("rkd", description="rkd (distance + 2 x angle), rkd_distance, rkd_angle, "
                               "similarity (similarity-preserving)")
    layer_map: dict[int, int] | None = Field(None, description="student layer -> teacher layer for the matching; "
                                             "default: uniform, last layers meet")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3, learning_rate=1e-4))
    peers: int = Field(0, ge=0, le=8, description="online distillation: further students trained alongside, each "
                       "also learning from the others' current predictions (deep mutual learning); the first is kept")
    peer_weight: float = Field(1.0, gt=0, description="weight of the mutual terms (peers)")
    generations: int = Field(1, ge=1, le=10, description="born-again: students trained in turn, each from the one "
                             "before (the first from the input model); the last is kept")
    sequence: SequenceConfig | None = Field(None, description="causal LMs: the teacher writes completions of "
                                            "prompts and the student trains on that text (sequence-level KD)")
    transfer: TransferConfig | None = Field(None, description="rows without a human label that the teacher labels "
                                            "for the student: unlabeled (rest or a file) and/or augment")

    @model_validator(mode="after")
    def _teacher_signal_needed(self) -> "DistillParams":
        if self.alpha == 0 and self.teacher_seeds:
            raise ValueError(
                "teacher_seeds: alpha 0 (hard labels) uses no teacher; give alpha > 0 or drop teacher_seeds"
            )
        if self.generations > 1 and self.alpha == 0:
            raise ValueError("generations: alpha 0 (hard labels) learns nothing from the generation before; give "
                             "alpha > 0")
        if "peer_weight" in self.model_fields_set and self.peers == 0 and self.peer_weight != 1.0:
            raise ValueError("peer_weight: there are no peers; set peers >= 1")
        if self.transfer is not None and self.alpha == 0:
            raise ValueError("transfer: alpha 0 (hard labels) uses no teacher to label the transfer rows; give "
                             "alpha > 0")
        if self.relation != "rkd" and self.relational_weight == 0:      # (a dump re-validated sets every field)
            raise ValueError("relation: the relation loss is off; set relational_weight > 0")
        if self.layer_map is not None and self.hidden_weight == 0 and self.attention_weight == 0:
            raise ValueError("layer_map: no layer matching is on; set hidden_weight or attention_weight > 0")
        return self


class Distill(Compressor):
    name = "distill"
    Params = DistillParams
    code_version = "1"
    # the teacher runs in PyTorch (its logits, layer matching) and layer-subset students copy its layers:
    # plain or sparse-stored weights (loaded dense), not factorised ones
    input_formats = ("hf", "hf-sparse")

    @classmethod
    def key_material(cls, params: DistillParams, resolve_model, base_dir: Path = Path(".")) -> dict:
        """A student ``model`` reference is its content (a local folder's weights), not its name; an unlabeled
        transfer file is its content too."""
        material = {"student_model": resolve_model(params.student.model).identity} if params.student.model else {}
        if params.transfer is not None and params.transfer.unlabeled not in (None, REST):
            material["transfer_file"] = file_digest(base_dir, params.transfer.unlabeled)
        if params.sequence is not None and params.sequence.prompts != "corpus":
            material["prompt_file"] = file_digest(base_dir, params.sequence.prompts)
        return material

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        params = self.params
        if model.is_causal_lm:
            check_causal_lm_params(params)
        elif params.top_k is not None:
            raise UnsupportedError("top_k folds a causal LM's vocabulary to the teacher's k likeliest tokens; a "
                                   "classifier's classes are kept whole: drop top_k")
        if params.sequence is not None:
            if not model.is_causal_lm:
                raise UnsupportedError("sequence: the teacher writes text for a causal-LM student; a classifier's "
                                       "teacher-made rows are transfer: (unlabeled, augment)")
            ctx, completions = self._on_teacher_text(model, ctx)
        if params.peers and ctx.data.task.is_multi_label:
            raise UnsupportedError("peers: mutual learning compares softmax distributions; a multi-label task's "
                                   "per-label outcomes are not built for it")
        teacher, records = model, []
        with tempfile.TemporaryDirectory(prefix="compbench-generation-") as scratch:
            for generation in range(1, params.generations + 1):     # born-again: each learns from the one before
                student, tokenizer, summary = self._one_generation(teacher, ctx, generation)
                records.append(summary)
                if generation < params.generations:
                    teacher = save_hf_artifact(Path(scratch) / str(generation), student, tokenizer, task=model.task,
                                               lineage=[])
        summary = {**records[-1], **({"generations": records} if params.generations > 1 else {}),
                   **({"teacher_written": len(ctx.data.train), "teacher_completions": completions}
                      if params.sequence is not None else {})}
        return save_hf_artifact(ctx.work_dir, student, tokenizer, task=model.task, lineage=[summary])

    def _on_teacher_text(self, teacher: ModelArtifact, ctx: CompressContext) -> tuple[CompressContext, int]:
        """``ctx`` with the training text replaced by the teacher's completions of the prompts (``sequence``), and
        how many completions it wrote (before the answer filter)."""
        config = self.params.sequence
        prompts = prompts_of(config, ctx.data.train[ctx.data.task.text_fields[0]].astype(str).tolist(),
                             teacher.tokenizer(), ctx.base_dir, ctx.seed)
        ctx.reporter.log(f"  {ctx.data.task.name} distill: the teacher writes {config.samples} x {config.new_tokens} "
                         f"tokens for {len(prompts.texts)} prompts")
        teacher_text = generated_set(teacher, prompts, config, ctx.seed, ctx.reporter)
        train = pd.DataFrame({ctx.data.task.text_fields[0]: teacher_text.texts})
        return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, train=train)), teacher_text.written

    def _one_generation(self, teacher: ModelArtifact, ctx: CompressContext, generation: int):
        """(student, tokenizer, lineage summary) of one student trained from ``teacher`` (the input model in the
        first generation, the previous student after)."""
        params = self.params
        seed = params.train.seed + generation - 1
        student, tokenizer = build_student(teacher, params.student, seed=seed, task=ctx.data.task,
                                           resolve=ctx.resolve_model,
                                           same_vocabulary=params.sequence is None or params.alpha > 0)
        matcher = None
        if params.hidden_weight > 0 or params.attention_weight > 0 or params.relational_weight > 0:
            check_same_vocabulary(tokenizer, teacher.tokenizer())
            matcher = LayerMatcher(teacher.torch_model(), student, params.layer_map, params.hidden_weight,
                                   params.attention_weight, params.relational_weight, params.relation)
        peers = None
        if params.peers:
            peers = Peers([build_student(teacher, params.student, seed=seed + PEER_SEED_STEP * k, task=ctx.data.task,
                                         resolve=ctx.resolve_model)[0] for k in range(1, params.peers + 1)],
                          params.peer_weight)
        further = [ctx.teacher_with_seed(s) for s in params.teacher_seeds] if generation == 1 else []
        teachers = [teacher, *further] if params.alpha > 0 else []
        description = f"distill generation {generation}" if params.generations > 1 else "distill"
        summary = train_against_teachers(student, tokenizer, teachers, params, params.train, ctx,
                                         selection=params, matcher=matcher, description=description,
                                         transfer=params.transfer, peers=peers)
        if matcher:
            summary["layer_map"] = [
                [student_layer, teacher_layer] for student_layer, teacher_layer in matcher.layer_map.items()
            ]
        return student, tokenizer, summary


def check_causal_lm_params(params: DistillParams) -> None:
    """What token-level distillation of a causal LM does not do (yet), refused before anything is built."""
    if params.hidden_weight > 0 or params.attention_weight > 0 or params.relational_weight > 0:
        raise UnsupportedError("layer matching and relations (hidden_weight, attention_weight, relational_weight) "
                               "are not built for causal LMs; distil them with the token-level loss alone")
    if params.peers:
        raise UnsupportedError("peers: mutual learning is built for classifiers' rows; a causal LM's students "
                               "learn from the teacher alone")
    if params.transfer is not None:
        raise UnsupportedError("transfer: a causal LM distils on its corpus's text, every token of which the teacher "
                               "already scores; teacher-made rows for causal LMs are generated completions")
    if params.teacher_seeds:
        raise UnsupportedError("teacher_seeds: a causal LM has no fine-tuning recipe to train further teachers "
                               "with other seeds")


def check_same_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Layer matching feeds the student's batches to the teacher: both must tokenise alike."""
    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ValueError("hidden_weight/attention_weight: layer matching needs a student with the teacher's tokenizer; "
                         "this student model has another vocabulary")
