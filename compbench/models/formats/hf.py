"""``hf``: a ``save_pretrained`` folder with safetensors weights (fp32, fp16, or a bitsandbytes
checkpoint); ONNX through optimum's exporter.
"""

from __future__ import annotations

from pathlib import Path

from compbench.models.formats.base import (
    ArtifactFormat,
    cached_onnx_export,
    checked_safetensors,
    reading_safetensors,
    register_format,
)
from compbench.models.kinds import auto_model_class, model_kind
from compbench.models.onnx_export import export_onnx


@register_format
class HuggingFaceFormat(ArtifactFormat):
    """``save_pretrained`` folder with safetensors weights (also bitsandbytes int8 checkpoints)."""

    name = "hf"

    def deployed_files(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("*.safetensors")) + [folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        from safetensors import safe_open

        total = nonzero = 0
        for weights in sorted(folder.glob("*.safetensors")):
            with reading_safetensors(weights), safe_open(str(weights), framework="pt") as tensors:
                for key in tensors.keys():
                    tensor = tensors.get_tensor(key)
                    total += tensor.numel()
                    nonzero += int(tensor.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path, device: str = "cpu"):
        from transformers import AutoConfig

        checked_safetensors(folder)    # from_pretrained's error would not say which file
        config = AutoConfig.from_pretrained(folder)
        model_class = auto_model_class(model_kind(config))
        if getattr(config, "quantization_config", None):   # bitsandbytes: placed at load
            # dtype "auto": the stored dtype; transformers' default here casts the unquantized layers to fp16
            return model_class.from_pretrained(folder, device_map=device, dtype="auto")
        return one_dtype(model_class.from_pretrained(folder, dtype="auto")).to(device)

    def onnx_files(self, folder: Path) -> list[Path]:
        def export(tmp: Path) -> str:
            checked_safetensors(folder)    # the exporter loads them, and would not say which file is damaged
            return export_onnx(folder, tmp)

        return cached_onnx_export(folder, export)


def one_dtype(model):
    """A half-precision model with every floating parameter in its stored dtype: ``from_pretrained(dtype="auto")``
    leaves parameters a model creates with an explicit float32 dtype (DeBERTa's ``q_bias`` and ``v_bias``) in
    float32, and the forward then multiplies half by float. Models that keep modules in float32 on purpose
    (``_keep_in_fp32_modules``) are left as they load."""
    import torch

    stored = model.dtype
    if stored in (torch.float16, torch.bfloat16) and not getattr(model, "_keep_in_fp32_modules", None):
        model = model.to(dtype=stored)
    return model
