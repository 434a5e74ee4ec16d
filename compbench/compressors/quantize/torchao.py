"""``quantize``'s torchao methods: ``torchao-int8-weight-only``, ``torchao-int8-dynamic``, ``torchao-int4-weight-only``
(stored as plain integers in safetensors, format ``torchao``)."""

from __future__ import annotations

from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import METHOD_IO, QuantizeParams, finish, method
from compbench.models.artifact import ModelArtifact


def _torchao(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext, scheme: str) -> ModelArtifact:
    from compbench.models.formats.torchao import quantize_torchao, save_torchao

    group_size = params.group_size if scheme == "int4-weight-only" else None
    quantized, spec, plain = quantize_torchao(model.torch_model().eval(), scheme, include_head=params.include_head,
                                              group_size=group_size)
    save_torchao(ctx.work_dir, quantized, spec, plain)
    return finish(model, ctx, fmt="torchao", precision=METHOD_IO[params.method][1].precision)


@method("torchao-int8-weight-only")
def torchao_int8_weight_only(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int8-weight-only")


@method("torchao-int8-dynamic")
def torchao_int8_dynamic(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int8-dynamic")


@method("torchao-int4-weight-only")
def torchao_int4_weight_only(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int4-weight-only")
