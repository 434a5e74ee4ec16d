"""``torch-int8-dynamic``: a PyTorch dynamic-quantized model (INT8 Linear weights, activations
quantized at run time), and the quantization that builds and rebuilds it.
"""

from __future__ import annotations

import json
import pickle
import warnings
from contextlib import contextmanager
from pathlib import Path

from compbench.common.errors import CompbenchError, UnreadableArtifactError, UnsupportedError
from compbench.models.formats.base import ArtifactFormat, register_format
from compbench.models.kinds import model_from_config

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
        """The parameters of the module the config builds (quantization keeps their shapes), each counted once:
        a tied output head that stays float while its table is quantized is stored twice but is one parameter.
        Non-zero: stored values that de-quantize to non-zero."""
        import torch

        with torch.device("meta"):     # shapes and ties only: no weights are made
            skeleton = model_from_config(folder)
        stored = dict(stored_parameters(load_quantized_state(folder)))
        groups: dict[int, list[str]] = {}
        for name, parameter in skeleton.named_parameters(remove_duplicate=False):
            groups.setdefault(id(parameter), []).append(name)
        total = nonzero = 0
        for names in groups.values():
            found = next((stored[name] for name in names if name in stored), None)
            if found is None:
                raise UnreadableArtifactError(f"{folder / QUANTIZED_STATE}: holds no {names[0]}; remove the artifact "
                                              "folder and it is built again")
            total += found.numel()
            nonzero += int(found.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path, device: str = "cpu"):
        model = model_from_config(folder)
        spec = json.loads((folder / QUANTIZATION_SPEC).read_text())
        # artifacts written before include_head existed quantized every Linear, the head too
        model = quantize_dynamic_int8(model.eval(), embeddings=spec["embeddings"],
                                      include_head=spec.get("include_head", True))
        model.load_state_dict(load_quantized_state(folder))
        return model

    def onnx_files(self, folder: Path) -> list[Path]:
        raise UnsupportedError("PyTorch dynamic-quantized modules do not export to ONNX; "
                               "use quantize method ort-dynamic for onnxruntime")


def stored_parameters(state: dict):
    """(parameter name, float tensor) for each weight and bias in a dynamic-quantized state dict: a quantized
    module keeps its Linear's weight and bias as ``<module>._packed_params._packed_params`` and its Embedding's
    table as ``<module>._packed_params._packed_weight``, both de-quantized here; their scales and zero points are
    not parameters."""
    import torch

    for name, value in state.items():
        module, _, leaf = name.rpartition("._packed_params.")
        if leaf == "_packed_params":
            pairs = zip(("weight", "bias"), value)
        elif leaf == "_packed_weight":
            pairs = [("weight", value)]
        else:
            if isinstance(value, torch.Tensor):
                yield name, value
            continue
        for part, tensor in pairs:
            if tensor is not None:
                yield f"{module}.{part}", tensor.dequantize() if tensor.is_quantized else tensor


def load_quantized_state(folder: Path) -> dict:
    import torch

    # weights_only: torch's restricted unpickler, which rebuilds tensors (quantized and packed ones too) and
    # nothing else; a planted pickle in a shared or shipped cache is refused instead of run
    path = folder / QUANTIZED_STATE
    with quiet_torch_quantization():
        try:
            return torch.load(path, weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CompbenchError(f"{path}: refused: holds more than tensors ({first}); compbench loads no code "
                                 "from a cache: remove the artifact folder to rebuild it") from None


def quantize_dynamic_int8(model, embeddings: bool, include_head: bool = True):
    """PyTorch dynamic quantization: every ``nn.Linear`` to INT8 weights with activations
    quantized at run time (a causal LM's output head only with ``include_head``), and (``embeddings``)
    embedding tables to 8-bit weight-only.

    Embedding tables the model reads whole rather than by lookup (DeBERTa's relative position table:
    ``families.Family.whole_embeddings``) stay float: a quantized Embedding has no weight tensor to read.
    A quantized Embedding's kernel takes contiguous indices only, and some models look up expanded views
    (RoBERTa's default ``token_type_ids``): its indices are made contiguous first. Loading applies the
    same function, so it rebuilds the same modules."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig

    from compbench.models.families import whole_embeddings

    spec = {torch.nn.Linear: default_dynamic_qconfig}
    if embeddings:
        spec[torch.nn.Embedding] = float_qparams_weight_only_qconfig
        spec.update({name: None for name in whole_embeddings(model)})   # a name's qconfig overrides its type's
    spec.update({name: None for name in float_head_names(model, include_head)})
    with quiet_torch_quantization():
        quantized = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    for module in quantized.modules():
        if isinstance(module, torch.ao.nn.quantized.Embedding):
            module.register_forward_pre_hook(_contiguous_indices)
    return quantized


def float_head_names(model, include_head: bool) -> set[str]:
    """The module names of a causal LM's output head (``lm_head``) unless ``include_head``: the head projects
    onto the whole vocabulary, so its errors reach every token's logits directly. Classifiers have none here."""
    head = None if include_head else model.get_output_embeddings()
    return {name for name, module in model.named_modules() if head is not None and module is head}


def _contiguous_indices(_module, inputs):
    return (inputs[0].contiguous(), *inputs[1:]) if inputs else None


@contextmanager
def quiet_torch_quantization():
    """torch.ao.quantization still works in torch 2.13 but warns that torchao replaces it;
    those warnings (and its TypedStorage one on load) say nothing about this run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")
        yield
