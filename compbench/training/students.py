"""Building a student model from a teacher: a subset of its layers (DistilBERT-style), a
smaller config derived from it (random or truncated weights), or any model reference."""

from __future__ import annotations

import copy
import re
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.models.artifact import ModelArtifact
from compbench.models.references import ResolvedModel, resolve_model
from compbench.tasks.glue import get_task
from compbench.training.finetune import load_base_for_task

LAYER_KEY = re.compile(
    r"^(.*\.layer\.)(\d+)(\..*)$"
)  # bert.encoder.layer.3.attention... / distilbert.transformer.layer.3...


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


def build_student(teacher: ModelArtifact, spec: StudentSpec, seed: int,
                  resolve: Callable[[str], ResolvedModel] = resolve_model):
    """(student module, tokenizer) for the teacher's task; ``resolve`` finds a ``model`` reference (the
    suite's relative folders resolve against the suite's folder)."""
    torch.manual_seed(seed)
    if spec.model is not None:
        return load_base_for_task(resolve(spec.model).location, get_task(teacher.task))
    teacher_module = teacher.torch_model()
    if spec.layers is not None:
        student = layer_subset(teacher_module, spec.layers)
    else:
        student = smaller_config_student(teacher_module, spec)
    return student, teacher.tokenizer()


def layer_subset(teacher, layers: list[int]):
    """A copy of ``teacher`` keeping only ``layers`` (in that order), weights copied exactly."""
    from transformers import AutoModelForSequenceClassification

    depth = teacher.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"student layers {bad} do not exist: the teacher has layers 0..{depth - 1}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForSequenceClassification.from_config(config)
    source = {new: old for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = LAYER_KEY.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(2)) in source.values():
            for new, old in source.items():
                if old == int(match.group(2)):
                    state[f"{match.group(1)}{new}{match.group(3)}"] = value
    student.load_state_dict(state, strict=True)
    return student.eval()


def smaller_config_student(teacher, spec: StudentSpec):
    """A student whose config is the teacher's with the given sizes; weights random, or the
    teacher's cut to size (evenly spaced layers, leading rows and columns)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(teacher.config)
    for field, attribute in (
        ("num_layers", "num_hidden_layers"),
        ("hidden_size", "hidden_size"),
        ("intermediate_size", "intermediate_size"),
        ("num_attention_heads", "num_attention_heads"),
    ):
        value = getattr(spec, field)
        if value is not None:
            setattr(config, attribute, value)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {config.num_attention_heads}"
        )
    student = AutoModelForSequenceClassification.from_config(config)
    if spec.init == "truncate":
        picked = (
            np.linspace(0, teacher.config.num_hidden_layers - 1, config.num_hidden_layers).round().astype(int).tolist()
        )
        student.load_state_dict(_truncated_state(teacher.state_dict(), student.state_dict(), picked))
    return student.eval()


def _truncated_state(teacher_state: dict, student_state: dict, picked: list[int]) -> dict:
    state = {}
    for key, target in student_state.items():
        match = LAYER_KEY.match(key)
        source_key = f"{match.group(1)}{picked[int(match.group(2))]}{match.group(3)}" if match else key
        source = teacher_state[source_key]
        state[key] = source[tuple(slice(0, n) for n in target.shape)].clone() if source.dim() else source.clone()
    return state
