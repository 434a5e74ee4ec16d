"""On-disk model formats: what is deployed, how it is counted, how it loads into PyTorch or ONNX Runtime.

A compressor declares the format it writes; every backend asks the artifact's format for
what it needs (a PyTorch module, an ONNX file) and gets ``UnsupportedError`` with the reason
where a format cannot provide it, so the cell is skipped, never faked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ClassVar

from compbench.errors import UnsupportedError
from compbench.onnx_export import ONNX_FILE, export_module, export_onnx

FORMATS: dict[str, "ArtifactFormat"] = {}


def register_format(cls: type["ArtifactFormat"]) -> type["ArtifactFormat"]:
    FORMATS[cls.name] = cls()
    return cls


class ArtifactFormat(ABC):
    name: ClassVar[str]

    @abstractmethod
    def deployed_files(self, folder: Path) -> list[Path]:
        """The files a deployment of this model ships (weights and model config)."""

    @abstractmethod
    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        """(parameters, non-zero parameters) as stored."""

    def load_torch(self, folder: Path, device: str = "cpu"):
        raise UnsupportedError(f"a model in the {self.name!r} format cannot be loaded into PyTorch")

    def onnx_files(self, folder: Path) -> list[Path]:
        """The ONNX model file first, then any external-data files it references."""
        raise UnsupportedError(f"a model in the {self.name!r} format cannot be exported to ONNX")


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
            with safe_open(str(weights), framework="pt") as tensors:
                for key in tensors.keys():
                    tensor = tensors.get_tensor(key)
                    total += tensor.numel()
                    nonzero += int(tensor.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path, device: str = "cpu"):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        if getattr(AutoConfig.from_pretrained(folder), "quantization_config", None):   # bitsandbytes: placed at load
            # dtype "auto": the stored dtype; transformers' default here casts the unquantized layers to fp16
            return AutoModelForSequenceClassification.from_pretrained(folder, device_map=device, dtype="auto")
        return AutoModelForSequenceClassification.from_pretrained(folder, dtype="auto").to(device)

    def onnx_files(self, folder: Path) -> list[Path]:
        return cached_onnx_export(folder, lambda tmp: export_onnx(folder, tmp))


def cached_onnx_export(folder: Path, export: Callable[[Path], str]) -> list[Path]:
    """Exported once, on first use, into ``<artifact>/onnx/`` (written aside, then renamed);
    ``export(tmp_folder)`` writes the model there and returns which exporter made it."""
    target = folder / "onnx"
    if not (target / ONNX_FILE).is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".onnx-", dir=folder))
        try:
            (tmp / "exporter.txt").write_text(export(tmp) + "\n")
            move_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return onnx_model_files(target / ONNX_FILE)


class TorchModuleFormat(ArtifactFormat):
    """Formats whose PyTorch module is rebuilt in code (not by ``from_pretrained``): ONNX comes
    from exporting that module."""

    def onnx_files(self, folder: Path) -> list[Path]:
        def export(tmp: Path) -> str:
            export_module(self.load_torch(folder), tmp)
            return "torch.onnx"
        return cached_onnx_export(folder, export)


SPARSE_WEIGHTS = "model.sparse.safetensors"
SPARSE_SPEC = "sparse.json"


@register_format
class SparseBitmaskFormat(TorchModuleFormat):
    """Unstructured-sparse weights stored compressed: for each pruned tensor a bitmask of its
    non-zero positions (1 bit per element) and its non-zero values; other tensors dense.
    Loading rebuilds dense tensors: PyTorch and ONNX Runtime run them on dense kernels."""

    name = "hf-sparse"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / SPARSE_WEIGHTS, folder / SPARSE_SPEC, folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        state = load_sparse_state(folder)
        return sum(t.numel() for t in state.values()), sum(int(t.count_nonzero()) for t in state.values())

    def load_torch(self, folder: Path, device: str = "cpu"):
        model = model_from_config(folder)
        model.load_state_dict(load_sparse_state(folder))
        return model.eval().to(device)


def save_sparse_state(folder: Path, state: dict, sparse_names: list[str]) -> None:
    """Write ``state`` with the tensors named in ``sparse_names`` as bitmask + values."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors, shapes = {}, {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if name in sparse_names:
            mask = tensor != 0
            tensors[f"{name}::mask"] = torch.from_numpy(np.packbits(mask.flatten().numpy()))
            tensors[f"{name}::values"] = tensor[mask].clone()
            shapes[name] = list(tensor.shape)
        else:
            tensors[name] = tensor.clone()
    save_file(tensors, str(folder / SPARSE_WEIGHTS))
    (folder / SPARSE_SPEC).write_text(json.dumps({"encoding": "bitmask+values", "shapes": shapes}, indent=1))


def load_sparse_state(folder: Path) -> dict:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    stored = load_file(str(folder / SPARSE_WEIGHTS))
    shapes = json.loads((folder / SPARSE_SPEC).read_text())["shapes"]
    state = {name: tensor for name, tensor in stored.items() if "::" not in name}
    for name, shape in shapes.items():
        values = stored[f"{name}::values"]
        count = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(stored[f"{name}::mask"].numpy(), count=count).astype(bool))
        dense = torch.zeros(count, dtype=values.dtype)
        dense[mask] = values
        state[name] = dense.reshape(shape)
    return state


LOW_RANK_SPEC = "low_rank.json"


@register_format
class LowRankFormat(TorchModuleFormat, HuggingFaceFormat):
    """A ``save_pretrained`` folder in which some ``nn.Linear`` layers are factorised into two
    (``low_rank.json`` lists them with their ranks); loading rebuilds those pairs, then the weights."""

    name = "hf-low-rank"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [*super().deployed_files(folder), folder / LOW_RANK_SPEC]

    def load_torch(self, folder: Path, device: str = "cpu"):
        from safetensors.torch import load_file

        from compbench.torch_modules import factorised_linear, replace_module

        model = model_from_config(folder)
        modules = dict(model.named_modules())
        for name, rank in json.loads((folder / LOW_RANK_SPEC).read_text())["ranks"].items():
            dense = modules[name]
            replace_module(model, name, factorised_linear(dense.in_features, dense.out_features, rank, dense.bias is not None))
        state = {}
        for weights in sorted(folder.glob("*.safetensors")):
            state.update(load_file(str(weights)))
        model.load_state_dict(state)
        return model.eval().to(device)


@register_format
class OnnxFormat(ArtifactFormat):
    """An ONNX graph (for example ONNX Runtime-quantized), with the model config and tokenizer."""

    name = "onnx"

    def deployed_files(self, folder: Path) -> list[Path]:
        return onnx_model_files(folder / ONNX_FILE) + [folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        """Elements of the graph's weight initializers (quantized weights count once each)."""
        import numpy as np
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(folder / ONNX_FILE), load_external_data=True)
        total = nonzero = 0
        for initializer in model.graph.initializer:
            if initializer.name.endswith(QUANTIZATION_PARAMETER_SUFFIXES):
                continue
            values = numpy_helper.to_array(initializer)
            if values.size > 1:   # skip scalars: shape constants
                total += values.size
                nonzero += int(np.count_nonzero(values))
        return total, nonzero

    def onnx_files(self, folder: Path) -> list[Path]:
        return onnx_model_files(folder / ONNX_FILE)


# onnxruntime names the scales and zero points of a quantized tensor after it: not weights.
QUANTIZATION_PARAMETER_SUFFIXES = ("_scale", "_zero_point")
QUANTIZED_STATE = "quantized_state.pt"
QUANTIZATION_SPEC = "quantization.json"   # what was quantized, so loading rebuilds the same modules


@register_format
class TorchDynamicInt8Format(ArtifactFormat):
    """A PyTorch dynamic-quantized model: INT8 ``nn.Linear`` weights, fp32 elsewhere.

    Stored as the quantized state dict next to the fp32 config; loading rebuilds the module
    from the config, applies the same quantization, and loads the INT8 state.
    """

    name = "torch-int8-dynamic"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / QUANTIZED_STATE, folder / QUANTIZATION_SPEC, folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        import torch

        total = nonzero = 0
        for value in load_quantized_state(folder).values():
            tensors = value if isinstance(value, tuple) else (value,)
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor) and tensor.dtype not in (torch.int64,) and tensor.numel() > 1:
                    plain = tensor.int_repr() if tensor.is_quantized else tensor
                    total += plain.numel()
                    nonzero += int(plain.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path, device: str = "cpu"):
        model = model_from_config(folder)
        spec = json.loads((folder / QUANTIZATION_SPEC).read_text())
        model = quantize_dynamic_int8(model.eval(), embeddings=spec["embeddings"])
        model.load_state_dict(load_quantized_state(folder))
        return model

    def onnx_files(self, folder: Path) -> list[Path]:
        raise UnsupportedError("PyTorch dynamic-quantized modules do not export to ONNX; "
                               "use quantize method ort-dynamic for onnxruntime")


def model_from_config(folder: Path):
    """The folder's architecture with fresh weights, for formats that load their own state."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder))


def load_quantized_state(folder: Path) -> dict:
    import torch

    with quiet_torch_quantization():   # packed INT8 params need the full unpickler: our own files only
        return torch.load(folder / QUANTIZED_STATE, weights_only=False)


def quantize_dynamic_int8(model, embeddings: bool):
    """PyTorch dynamic quantization: every ``nn.Linear`` to INT8 weights with activations
    quantized at run time, and (``embeddings``) embedding tables to 8-bit weight-only."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig

    spec = {torch.nn.Linear: default_dynamic_qconfig}
    if embeddings:
        spec[torch.nn.Embedding] = float_qparams_weight_only_qconfig
    with quiet_torch_quantization():
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


@contextmanager
def quiet_torch_quantization():
    """torch.ao.quantization still works in torch 2.13 but warns that torchao replaces it;
    those warnings (and its TypedStorage one on load) say nothing about this run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")
        yield


def onnx_model_files(model_file: Path) -> list[Path]:
    """The ONNX file and the external-data files its initializers point to."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    external = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [model_file] + sorted(model_file.parent / name for name in external)


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
