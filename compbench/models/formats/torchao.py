"""``torchao``: linear weights quantized by torchao (int8 weight-only, int8 dynamic activations + int8 weights,
int4 weight-only on CPU), stored as plain integers, scales and zero points in safetensors with a JSON spec;
loading rebuilds the model from its config and wraps the stored integers in torchao's tensor subclasses again.

Nothing here unpickles: torchao's own ``torch.save`` of tensor subclasses would need ``torch.load`` to import
and run its classes. The int4 weights are stored as two 4-bit values per byte in plain row order, not in the CPU
kernel's packed layout (a kernel detail that may change between torch builds), and packed at load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compbench.common.errors import UnreadableArtifactError, UnsupportedError
from compbench.models.formats.base import ArtifactFormat, reading_safetensors, register_format
from compbench.models.kinds import model_from_config

TORCHAO_WEIGHTS = "model.torchao.safetensors"
TORCHAO_SPEC = "torchao.json"
PART = "::"                          # "<module>.weight::<part>" names a stored piece of a quantized weight
INT4_GROUP_SIZES = (32, 64, 128)     # what torchao's CPU int4 kernel (Int4OpaqueTensor) takes


@register_format
class TorchaoFormat(ArtifactFormat):
    """torchao-quantized ``nn.Linear`` weights (plain integers + scales), every other tensor as stored float."""

    name = "torchao"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / TORCHAO_WEIGHTS, folder / TORCHAO_SPEC, folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        spec, stored = read_torchao(folder)
        scheme = SCHEMES[spec["method"]]
        total = nonzero = 0
        for name, tensor in stored.items():
            if PART not in name:
                total += tensor.numel()
                nonzero += int(tensor.count_nonzero())
        for fqn in spec["modules"]:
            weight = scheme.dequantize(_parts(stored, fqn, scheme), spec)
            total += weight.numel()
            nonzero += int(weight.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path, device: str = "cpu"):
        import torch

        spec, stored = read_torchao(folder)
        scheme = SCHEMES[spec["method"]]
        if device != "cpu" and not scheme.any_device:
            raise UnsupportedError(f"torchao {spec['method']} runs on CPU only here (torchao's CPU int4 kernel)")
        _require_torchao()
        model = model_from_config(folder).eval()
        modules = dict(model.named_modules())
        for fqn in spec["modules"]:
            weight = scheme.rebuild(_parts(stored, fqn, scheme), spec)
            modules[fqn].weight = torch.nn.Parameter(weight, requires_grad=False)
        state = {name: tensor for name, tensor in stored.items() if PART not in name}
        state.update({alias: state[source] for alias, source in spec["aliases"].items()})
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {f"{fqn}.weight" for fqn in spec["modules"]}:
            raise UnreadableArtifactError(
                f"{folder / TORCHAO_WEIGHTS}: does not match the model its config builds (missing "
                f"{sorted(set(missing) - {f'{fqn}.weight' for fqn in spec['modules']})[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}); remove the artifact folder and it is built again")
        return model.to(device)

    def onnx_files(self, folder: Path) -> list[Path]:
        raise UnsupportedError("torchao's quantized tensors do not export to ONNX; use quantize method ort-dynamic "
                               "or ort-int4 for onnxruntime")


# ------------------------------------------------------------------------ schemes


@dataclass(frozen=True)
class Scheme:
    """One torchao method: its quantize_ config, the plain parts of a quantized weight, and the way back."""

    parts: tuple[str, ...]
    config: Callable[[dict], object]               # spec -> torchao config for quantize_
    plain: Callable[[object, object, dict], dict]  # (fp32 weight, torchao's quantized weight, spec) -> parts
    rebuild: Callable[[dict, dict], object]        # (parts, spec) -> torchao tensor subclass
    dequantize: Callable[[dict, dict], object]     # (parts, spec) -> float weight (counting only)
    eligible: Callable[[object, dict], bool] = lambda weight, spec: True
    any_device: bool = True


def _int8_config(spec: dict):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    # set_inductor_config: torchao would change torch._inductor's global settings, for torch.compile only
    if spec["method"] == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    return Int8WeightOnlyConfig(set_inductor_config=False)


def _int8_activation_kwargs(spec: dict):
    if spec["method"] != "int8-dynamic":
        return None
    from torchao.quantization.granularity import PerRow
    from torchao.quantization.quant_primitives import MappingType
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import QuantizeTensorToInt8Kwargs

    # per-token symmetric int8 activations: Int8DynamicActivationInt8WeightConfig's defaults
    return QuantizeTensorToInt8Kwargs(granularity=PerRow(), mapping_type=MappingType.SYMMETRIC)


def _int8_plain(weight, quantized, spec: dict) -> dict:
    return {"qdata": quantized.qdata, "scale": quantized.scale, "zero_point": quantized.zero_point}


def _int8_rebuild(parts: dict, spec: dict):
    import torch
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    qdata = parts["qdata"]
    return Int8Tensor(qdata, parts["scale"], [1, qdata.shape[1]], getattr(torch, spec["dtype"]),
                      zero_point=parts["zero_point"], act_quant_kwargs=_int8_activation_kwargs(spec))


def _int8_dequantize(parts: dict, spec: dict):
    return (parts["qdata"].float() - parts["zero_point"].float()) * parts["scale"]


def _int4_config(spec: dict):
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=spec["group_size"], set_inductor_config=False)


def _int4_eligible(weight, spec: dict) -> bool:
    # torchao leaves such weights float too (its int4 handlers skip shapes the groups do not divide)
    return weight.ndim == 2 and weight.shape[1] % spec["group_size"] == 0


def _int4_plain(weight, quantized, spec: dict) -> dict:
    """Int4OpaqueTensor.from_hp's integers (tinygemm qparams: asymmetric 0..15, float zero points) before
    the kernel packing; ``quantize_torchao`` checks that re-packing them gives torchao's tensor bit for bit."""
    import torch
    from torchao.quantization.quant_primitives import (
        MappingType,
        _choose_qparams_affine_tinygemm,
        _quantize_affine_tinygemm,
    )

    block = [1, spec["group_size"]]
    scale, zero = _choose_qparams_affine_tinygemm(weight, MappingType.ASYMMETRIC, block, torch.int32, 0, 15, 1e-6,
                                                  None, weight.dtype)
    ints = _quantize_affine_tinygemm(weight, block, scale, zero, torch.int32, 0, 15).to(torch.uint8)
    rows = weight.shape[0]
    return {"int4": ints[:, 0::2] | (ints[:, 1::2] << 4), "scale": scale.reshape(rows, -1),
            "zero": zero.reshape(rows, -1)}


def _int4_values(parts: dict):
    import torch

    packed = parts["int4"]
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1).to(torch.int32)


def _int4_rebuild(parts: dict, spec: dict):
    import torch
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    ints = _int4_values(parts)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(ints, 1)
    scale_and_zero = pack_tinygemm_scales_and_zeros(parts["scale"], parts["zero"], parts["scale"].dtype)
    return Int4OpaqueTensor(qdata=packed, scale_and_zero=scale_and_zero, block_size=[1, spec["group_size"]],
                            shape=ints.shape)


def _int4_dequantize(parts: dict, spec: dict):
    ints = _int4_values(parts).float()
    group = spec["group_size"]
    grouped = ints.reshape(ints.shape[0], -1, group)
    # tinygemm: w = (q - 8) * scale + zero
    weight = (grouped - 8) * parts["scale"].unsqueeze(-1) + parts["zero"].unsqueeze(-1)
    return weight.reshape(ints.shape)


_INT8 = dict(parts=("qdata", "scale", "zero_point"), config=_int8_config, plain=_int8_plain, rebuild=_int8_rebuild,
             dequantize=_int8_dequantize)
SCHEMES: dict[str, Scheme] = {
    "int8-weight-only": Scheme(**_INT8),
    "int8-dynamic": Scheme(**_INT8),
    "int4-weight-only": Scheme(parts=("int4", "scale", "zero"), config=_int4_config, plain=_int4_plain,
                               rebuild=_int4_rebuild, dequantize=_int4_dequantize, eligible=_int4_eligible,
                               any_device=False),
}


# ------------------------------------------------------------------------ build, save, read


def quantize_torchao(model, method: str, *, include_head: bool, group_size: int | None = None):
    """Quantize ``model``'s ``nn.Linear`` weights in place with torchao's ``quantize_`` (the output head only with
    ``include_head``); returns (model, spec, plain parts per quantized module). Raises UnsupportedError where
    torchao cannot do ``method`` here."""
    import torch

    from compbench.models.formats.torch_int8 import float_head_names

    spec = {"method": method, "group_size": group_size, "dtype": str(model.dtype).removeprefix("torch."),
            "torchao": _torchao_version()}
    _require_torchao()
    if method == "int4-weight-only":
        _check_int4_cpu(group_size)
    scheme = SCHEMES[method]
    keep_float = float_head_names(model, include_head)
    originals = {fqn: module.weight.detach().clone() for fqn, module in model.named_modules()
                 if isinstance(module, torch.nn.Linear) and fqn not in keep_float
                 and scheme.eligible(module.weight, spec)}
    if not originals:
        raise UnsupportedError(f"torchao {method}: no linear layer of this model fits it")
    # named in the spec: a group size that does not divide a layer's inputs leaves that layer float
    spec["float_linears"] = sorted(fqn for fqn, module in model.named_modules()
                                   if isinstance(module, torch.nn.Linear) and fqn not in originals
                                   and fqn not in keep_float)
    from torchao.quantization import quantize_

    quantize_(model, scheme.config(spec), filter_fn=lambda module, fqn: fqn in originals)
    modules = dict(model.named_modules())
    plain = {}
    for fqn, original in originals.items():
        plain[fqn] = {part: tensor.contiguous() for part, tensor
                      in scheme.plain(original, modules[fqn].weight, spec).items()}
        _check_same(scheme.rebuild(plain[fqn], spec), modules[fqn].weight, f"{fqn}.weight", method)
    spec["modules"] = sorted(plain)
    return model, spec, plain


def _check_int4_cpu(group_size: int | None) -> None:
    import torch

    if group_size not in INT4_GROUP_SIZES:
        raise UnsupportedError(f"torchao's CPU int4 kernel takes group sizes {INT4_GROUP_SIZES}, not {group_size}")
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise UnsupportedError(f"torch {torch.__version__} has no CPU int4 kernel (aten._weight_int4pack_mm_for_cpu)")


def _check_same(rebuilt, quantized, name: str, method: str) -> None:
    """What loading rebuilds from the stored integers must be torchao's tensor exactly (data and attributes)."""
    import torch

    if type(rebuilt) is not type(quantized):
        raise UnsupportedError(f"torchao {method}: {name} became a {type(quantized).__name__}, compbench stores "
                               f"{type(rebuilt).__name__} (torchao {_torchao_version()} is not the version it knows)")
    for part in quantized.tensor_data_names + getattr(quantized, "optional_tensor_data_names", []):
        ours, theirs = getattr(rebuilt, part, None), getattr(quantized, part, None)
        same = (ours is None and theirs is None) or (
            ours is not None and theirs is not None and ours.dtype == theirs.dtype and torch.equal(ours, theirs))
        if not same:
            raise UnsupportedError(f"torchao {method}: {name}.{part} rebuilt from the stored integers differs from "
                                   f"torchao's (torchao {_torchao_version()})")
    for attribute in quantized.tensor_attribute_names + getattr(quantized, "optional_tensor_attribute_names", []):
        if list_or_value(getattr(rebuilt, attribute, None)) != list_or_value(getattr(quantized, attribute, None)):
            raise UnsupportedError(f"torchao {method}: {name}.{attribute} rebuilt as {getattr(rebuilt, attribute)!r}, "
                                   f"torchao made {getattr(quantized, attribute)!r}")


def list_or_value(value):
    return list(value) if isinstance(value, tuple) else value


def save_torchao(folder: Path, model, spec: dict, plain: dict) -> None:
    """Write the float tensors once each (tied ones as aliases), the plain parts, and the spec."""
    from safetensors.torch import save_file

    quantized = {f"{fqn}.weight" for fqn in plain}
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in model.state_dict().items():
        if name in quantized:
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous()
    for fqn, parts in plain.items():
        tensors.update({f"{fqn}.weight{PART}{part}": tensor for part, tensor in parts.items()})
    save_file(tensors, str(folder / TORCHAO_WEIGHTS))
    (folder / TORCHAO_SPEC).write_text(json.dumps({**spec, "aliases": aliases}, indent=1))


def read_torchao(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    spec_file = folder / TORCHAO_SPEC
    try:
        spec = json.loads(spec_file.read_text())
        SCHEMES[spec["method"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableArtifactError(f"{spec_file}: missing or not a torchao spec ({type(exc).__name__}: {exc}); "
                                      "remove the artifact folder and it is built again") from None
    with reading_safetensors(folder / TORCHAO_WEIGHTS):
        stored = load_file(str(folder / TORCHAO_WEIGHTS))
    return spec, stored


def _parts(stored: dict, fqn: str, scheme: Scheme) -> dict:
    try:
        return {part: stored[f"{fqn}.weight{PART}{part}"] for part in scheme.parts}
    except KeyError as exc:
        raise UnreadableArtifactError(f"{TORCHAO_WEIGHTS}: {exc.args[0]} missing; remove the artifact folder and "
                                      "it is built again") from None


def _require_torchao() -> None:
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise UnsupportedError(f"torchao is not importable here ({exc}); pip install 'torchao>=0.18,<0.19'") from None


def _torchao_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchao")
    except PackageNotFoundError:
        return "not installed"
