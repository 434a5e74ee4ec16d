"""``quantize``'s PyTorch methods: ``dynamic`` (INT8 ``nn.Linear`` weights, activations at run time) and ``fp16``."""

from __future__ import annotations

import json

from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import QuantizeParams, finish, method
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.torch_int8 import QUANTIZATION_SPEC, QUANTIZED_STATE, quantize_dynamic_int8


@method("dynamic")
def torch_dynamic(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    import torch

    quantized = quantize_dynamic_int8(model.torch_model().eval(), embeddings=params.embeddings,
                                      include_head=params.include_head)
    torch.save(quantized.state_dict(), ctx.work_dir / QUANTIZED_STATE)
    spec = {"embeddings": params.embeddings, "include_head": params.include_head}
    (ctx.work_dir / QUANTIZATION_SPEC).write_text(json.dumps(spec))
    return finish(model, ctx, fmt="torch-int8-dynamic", precision="int8-dynamic")


@method("fp16")
def fp16(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return save_hf_artifact(
        ctx.work_dir, model.torch_model().half(), model.tokenizer(), task=model.task, lineage=[], precision="fp16"
    )
