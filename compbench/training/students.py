"""Building a student model from a teacher: a subset of its layers (DistilBERT-style), a
smaller config derived from it (random or truncated weights), or any model reference.

A causal-LM teacher gives a causal-LM student of the same kind: a layer subset keeps the decoder layers
chosen (``model.layers``) with the embeddings, final norm and LM head; a ``model`` student must share the
teacher's tokenizer, as token-level distillation compares distributions over one vocabulary."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.common.errors import UnsupportedError
from compbench.models.artifact import ModelArtifact
from compbench.models.families import family_of
from compbench.models.kinds import auto_model_class, model_kind
from compbench.models.references import ResolvedModel, resolve_model
from compbench.tasks.glue import TaskSpec
from compbench.training.finetune import load_base_for_task


class StudentSpec(BaseModel):
    """Exactly one of ``layers``, the size fields, or ``model``."""

    model_config = ConfigDict(extra="forbid")

    layers: list[int] | None = Field(None, min_length=1, description="teacher layers to keep, e.g. [0, 2, 4]")
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=8)
    intermediate_size: int | None = Field(None, ge=8)
    num_attention_heads: int | None = Field(None, ge=1)
    init: Literal["truncate", "random"] = Field(
        "truncate", description="size-derived students: teacher weights cut to size, or random"
    )
    model: str | None = Field(None, description="any model reference (alias, folder, hub id) with a fresh task head")

    @model_validator(mode="after")
    def _one_kind(self) -> "StudentSpec":
        sized = any(
            v is not None for v in (self.num_layers, self.hidden_size, self.intermediate_size, self.num_attention_heads)
        )
        kinds = [
            name
            for name, given in (
                ("layers", self.layers is not None),
                ("sizes", sized),
                ("model", self.model is not None),
            )
            if given
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of: layers (a subset of teacher layers), sizes (num_layers, hidden_size, "
                f"intermediate_size, num_attention_heads), or model; got {', '.join(kinds) or 'none'}"
            )
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct; got {self.layers}")
        return self


def build_student(teacher: ModelArtifact, spec: StudentSpec, seed: int, task: TaskSpec | None = None,
                  resolve: Callable[[str], ResolvedModel] = resolve_model, same_vocabulary: bool = True):
    """(student module, tokenizer) for the teacher's ``task`` (a ``model`` student gets a fresh head for it);
    ``resolve`` finds a ``model`` reference (the suite's relative folders resolve against the suite's folder).
    A causal-LM ``model`` student must tokenise as the teacher does unless ``same_vocabulary`` is False (only
    text passes between them: sequence-level distillation)."""
    torch.manual_seed(seed)
    if spec.model is not None and teacher.is_causal_lm:
        return causal_lm_student(teacher, resolve(spec.model), same_vocabulary)
    if spec.model is not None:
        if task is None:
            raise ValueError("a student given as a model needs the task its head is made for")
        return load_base_for_task(resolve(spec.model).location, task)
    teacher_module = teacher.torch_model()
    if spec.layers is not None:
        student = layer_subset(teacher_module, spec.layers)
    else:
        student = smaller_config_student(teacher_module, spec)
    return student, teacher.tokenizer()


def causal_lm_student(teacher: ModelArtifact, student: ResolvedModel, same_vocabulary: bool = True):
    """A causal LM given as a model reference, refused unless it tokenises as the teacher does (where
    ``same_vocabulary``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student.location)
    if same_vocabulary and tokenizer.get_vocab() != teacher.tokenizer().get_vocab():
        raise UnsupportedError(
            f"student {student.reference}: token-level distillation compares the teacher's and the student's "
            "next-token distributions entry by entry, so the student needs the teacher's tokenizer; this one has "
            f"another vocabulary ({len(tokenizer.get_vocab())} tokens, the teacher's "
            f"{len(teacher.tokenizer().get_vocab())}); sequence-level distillation (sequence:, alpha 0) works "
            "across tokenizers")
    return AutoModelForCausalLM.from_pretrained(student.location), tokenizer


def _model_class(config):
    """The Auto class of the teacher's kind (a classifier or a causal LM)."""
    return auto_model_class(model_kind(config))


def layer_subset(teacher, layers: list[int]):
    """A copy of ``teacher`` keeping only ``layers`` (in that order), weights copied exactly; where the
    family keeps its layers and counts them comes from ``models.families`` (refused for shared layers).
    Everything outside the layers (embeddings, final norm, head) is kept as it is."""
    family = family_of(teacher)
    family.check_layer_subset()
    depth = family.num_layers(teacher.config)
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"student layers {bad} do not exist: the teacher has layers 0..{depth - 1}")
    config = family.resized_config(teacher.config, layers=len(layers))
    pruned = {int(layer): heads for layer, heads in (config.pruned_heads or {}).items()}
    config.pruned_heads = {new: pruned[old] for new, old in enumerate(layers) if old in pruned}   # renumbered
    if isinstance(getattr(config, "layer_types", None), list):     # per-layer attention kinds (e.g. Qwen2)
        config.layer_types = [config.layer_types[old] for old in layers]
    student = _model_class(teacher.config).from_config(config)
    layer_key, source = family.layer_keys(), {new: old for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = layer_key.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(2)) in source.values():
            for new, old in source.items():
                if old == int(match.group(2)):
                    state[f"{match.group(1)}{new}{match.group(3)}"] = value
    student.load_state_dict(state, strict=True)
    return student.eval()


def smaller_config_student(teacher, spec: StudentSpec):
    """A student whose config is the teacher's with the given sizes (in the family's config fields); weights
    random, or the teacher's cut to size (evenly spaced layers, leading rows and columns; weights the teacher
    lacks, such as a projection a narrower width adds, stay random). Shared layers (ALBERT) keep their weights
    whatever ``num_layers`` is: it counts applications of them."""
    family = family_of(teacher)
    config = family.resized_config(teacher.config, layers=spec.num_layers, hidden=spec.hidden_size,
                                   heads=spec.num_attention_heads, ffn=spec.intermediate_size)
    hidden, heads = family.hidden_size(config), family.num_heads(config)
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    student = _model_class(teacher.config).from_config(config)
    if spec.init == "truncate":
        picked = (
            np.linspace(0, family.num_layers(teacher.config) - 1, family.num_layers(config)).round().astype(int)
            .tolist()
        )
        student.load_state_dict(_truncated_state(teacher.state_dict(), student.state_dict(), picked,
                                                 family.layer_keys()))
    return student.eval()


def _truncated_state(teacher_state: dict, student_state: dict, picked: list[int], layer_key) -> dict:
    state = {}
    for key, target in student_state.items():
        match = layer_key.match(key) if layer_key is not None else None
        source_key = f"{match.group(1)}{picked[int(match.group(2))]}{match.group(3)}" if match else key
        source = teacher_state.get(source_key)
        if source is None:
            state[key] = target
        else:
            state[key] = source[tuple(slice(0, n) for n in target.shape)].clone() if source.dim() else source.clone()
    return state
