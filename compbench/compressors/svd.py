"""``svd``: low-rank factorisation. Each selected ``nn.Linear`` with weight ``W (m x n)`` becomes
two Linears from its truncated SVD, ``x -> (U_r S_r) (V_r^T x) + b``, with ``r`` from exactly one
of ``rank`` (fixed), ``energy`` (the smallest ``r`` keeping that share of sum(S^2)), or ``ratio``
(``r = ratio * m n / (m + n)``: each factorised layer keeps that share of its parameters).
A layer where ``r >= m n / (m + n)`` would not get smaller: it stays dense and is listed.
``recovery`` fine-tunes afterwards (optionally distilling from the unfactorised model).
"""

from __future__ import annotations

import json
import math

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compbench.compressors.base import CompressContext, Compressor, Stored
from compbench.compressors.recovery import RecoveryParams, score_and_recover
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.low_rank import LOW_RANK_SPEC
from compbench.models.surgery import (
    ENCODER_LINEARS,
    check_pattern,
    factorised_linear,
    replace_module,
    selected_linears,
)


class SvdParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int | None = Field(None, ge=1, description="the same rank for every selected layer")
    energy: float | None = Field(
        None, gt=0, le=1, description="share of the squared singular values to keep, per layer"
    )
    ratio: float | None = Field(None, gt=0, lt=1, description="share of each layer's parameters to keep")
    modules: str = Field(
        ENCODER_LINEARS, description="regex over Linear module names (default: every Linear of the transformer layers)"
    )
    recovery: RecoveryParams | None = None

    _pattern = field_validator("modules")(check_pattern)

    @model_validator(mode="after")
    def _one_rule(self) -> "SvdParams":
        given = [name for name in ("rank", "energy", "ratio") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rank, energy or ratio; got {', '.join(given) or 'none'}")
        return self


def break_even_rank(m: int, n: int) -> float:
    """Ranks at or above this store at least as many weights factorised (r (m + n)) as dense (m n)."""
    return m * n / (m + n)


def chosen_rank(singular_values: torch.Tensor, m: int, n: int, params: SvdParams) -> int:
    if params.rank is not None:
        return min(params.rank, len(singular_values))
    if params.ratio is not None:
        return max(1, math.floor(params.ratio * break_even_rank(m, n)))
    energy = torch.cumsum(singular_values.double() ** 2, 0) / (singular_values.double() ** 2).sum()
    return int(torch.searchsorted(energy, torch.tensor(params.energy, dtype=torch.float64) - 1e-12)) + 1


def factorise(linear: torch.nn.Linear, rank: int, singular: tuple) -> torch.nn.Sequential:
    u, s, vh = singular
    pair = factorised_linear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    with torch.no_grad():
        pair[0].weight.copy_(vh[:rank])
        pair[1].weight.copy_(u[:, :rank] * s[:rank])
        if linear.bias is not None:
            pair[1].bias.copy_(linear.bias)
    return pair


class Svd(Compressor):
    name = "svd"
    Params = SvdParams
    code_version = "1"
    input_formats = ("hf", "hf-sparse")     # dense Linear layers: factorised ones are not factorised again
    output = Stored("hf-low-rank", "fp32")  # (plain hf when no layer was worth factorising)

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        params = self.params
        module, tokenizer = model.torch_model(), model.tokenizer()
        ranks, left_dense = {}, {}
        for name, linear in selected_linears(module, params.modules).items():
            m, n = linear.weight.shape
            singular = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
            rank = chosen_rank(singular[1], m, n, params)
            if rank >= break_even_rank(m, n):
                left_dense[name] = rank
                continue
            replace_module(module, name, factorise(linear, rank, tuple(t.float() for t in singular)))
            ranks[name] = rank
        ctx.reporter.log(
            f"  svd: {len(ranks)} layers factorised, {len(left_dense)} left dense (rank would not save parameters)"
        )
        record = {
            "ranks": ranks,
            "left_dense": left_dense,
            **score_and_recover(module, tokenizer, model, params.recovery, ctx, "svd"),
        }
        artifact = save_hf_artifact(ctx.work_dir, module, tokenizer, task=model.task, lineage=[record])
        if ranks:
            (ctx.work_dir / LOW_RANK_SPEC).write_text(json.dumps({"ranks": ranks}, indent=1))
            artifact.format = "hf-low-rank"
        return artifact
