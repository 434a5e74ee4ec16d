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
        """Each stored tensor's elements (a tied table is saved once); a bitsandbytes checkpoint's 4-bit weights
        count their logical elements (two a byte), their scales and code books (``bitsandbytes_parts``) none."""
        from safetensors import safe_open

        total = nonzero = 0
        for weights in sorted(folder.glob("*.safetensors")):
            with reading_safetensors(weights), safe_open(str(weights), framework="pt") as tensors:
                keys = set(tensors.keys())
                four_bit = {key.partition(BNB_4BIT_STATE)[0]: key for key in keys if BNB_4BIT_STATE in key}
                for key in sorted(keys - bitsandbytes_parts(keys, four_bit)):
                    if key in four_bit:
                        count, found = _four_bit_counts(tensors, key, four_bit[key])
                    else:
                        tensor = tensors.get_tensor(key)
                        count, found = tensor.numel(), int(tensor.count_nonzero())
                    total += count
                    nonzero += found
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


# bitsandbytes saves beside a 4-bit weight W (two values a byte) W.absmax, W.quant_map, W.nested_* (its scales and
# code book) and W.quant_state.bitsandbytes__nf4 (or __fp4: JSON with W's shape and block size); beside an LLM.int8
# module M's int8 weight M.SCB (its row scales) and M.weight_format. None of them is a parameter.
BNB_4BIT_STATE = ".quant_state.bitsandbytes__"
BNB_INT8_PARTS = (".SCB", ".weight_format")


def bitsandbytes_parts(keys: set[str], four_bit: dict[str, str]) -> set[str]:
    """The keys among ``keys`` that hold bitsandbytes' scales, code books and states, not weights."""
    parts = {key for key in keys for weight in four_bit if key.startswith(weight + ".")}
    modules = {key.removesuffix(".SCB") for key in keys if key.endswith(".SCB") and f"{key[:-4]}.weight" in keys}
    return parts | {module + part for module in modules for part in BNB_INT8_PARTS if module + part in keys}


def _four_bit_counts(tensors, key: str, state_key: str) -> tuple[int, int]:
    """(elements, non-zero elements) of a bitsandbytes 4-bit weight: each value is ``quant_map[code]`` times its
    block's absmax (with double quantization the absmaxes are codes themselves: the values' codes alone count)."""
    import json

    import torch

    state = json.loads(bytes(tensors.get_tensor(state_key).tolist()))
    count = int(torch.Size(state["shape"]).numel())
    packed = tensors.get_tensor(key).flatten()
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).flatten()[:count].long()
    values = tensors.get_tensor(f"{key}.quant_map")[codes]
    absmax = tensors.get_tensor(f"{key}.absmax")
    if absmax.is_floating_point():
        values = values * absmax.repeat_interleave(state["blocksize"])[:count]
    return count, int(values.count_nonzero())
