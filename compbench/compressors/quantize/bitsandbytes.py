"""``quantize``'s bitsandbytes methods, through transformers: ``bnb-int8`` (LLM.int8) and ``bnb-nf4``."""

from __future__ import annotations

from compbench.common.errors import UnsupportedError
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import QuantizeParams, library_version, method
from compbench.models.artifact import ModelArtifact, save_hf_artifact


@method("bnb-int8")
def bnb_int8(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=params.threshold)
    return _bitsandbytes(model, ctx, config, what="LLM.int8", precision="int8-bnb")


@method("bnb-nf4")
def bnb_nf4(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    import torch
    from transformers import BitsAndBytesConfig

    # compute dtype fp32: the model's own precision, so the 4-bit weights are the only change
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    return _bitsandbytes(model, ctx, config, what="NF4", precision="nf4-bnb")


def _bitsandbytes(model: ModelArtifact, ctx: CompressContext, config, *, what: str, precision: str) -> ModelArtifact:
    """Load the folder through transformers with a BitsAndBytesConfig (transformers leaves the output head float)
    and save it; bitsandbytes 0.50 runs both on CPU too."""
    import torch

    from compbench.models.kinds import auto_model_class

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        # dtype: without it transformers casts every layer bitsandbytes leaves alone (embeddings,
        # LayerNorm, biases, the head) to fp16, a second compression this method does not name
        quantized = auto_model_class(model.kind).from_pretrained(
            model.path, quantization_config=config, device_map=device, dtype=torch.float32
        )
    except Exception as exc:  # no bitsandbytes, or a build without kernels for this device
        raise UnsupportedError(
            f"bitsandbytes ({library_version('bitsandbytes')}) cannot run {what} on {device}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return save_hf_artifact(
        ctx.work_dir, quantized, model.tokenizer(), task=model.task, lineage=[], precision=precision
    )
