"""``gguf``: one GGUF file (llama.cpp's format, ``model.gguf``) with ``config.json`` and the tokenizer beside it (the
config and tokenizer let the row's KV-cache figures and the baseline's prompts be computed; llama.cpp itself reads
only the file, hyper-parameters and vocabulary included). Written by ``quantize`` method ``gguf``
(``compressors.quantize.llamacpp``); an artifact in another format becomes one through ``models.gguf_export``.

Parameters are the tensors' logical elements (a Q4_K block of 256 weights counts 256; norms count too), as a
PyTorch model's ``numel`` counts them; non-zero parameters are those whose de-quantized value is not zero
(``gguf.quants.dequantize``, which reads every type written here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compbench.common.errors import UnreadableArtifactError
from compbench.models.formats.base import ArtifactFormat, register_format

GGUF_FILE = "model.gguf"
FLOAT_TYPES = ("f32", "f16", "bf16")      # the GGUF types written from the fp32 model, not quantized


@register_format
class GgufFormat(ArtifactFormat):
    """A GGUF file with the model config and tokenizer."""

    name = "gguf"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / GGUF_FILE]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        return gguf_parameter_counts(folder / GGUF_FILE)


def read_gguf(path: Path):
    """``gguf.GGUFReader`` of ``path``; an unreadable file is an error naming it."""
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except (OSError, ValueError, IndexError) as exc:
        raise UnreadableArtifactError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def gguf_parameter_counts(path: Path) -> tuple[int, int]:
    from gguf.quants import dequantize

    params = nonzero = 0
    for tensor in read_gguf(path).tensors:
        params += int(tensor.n_elements)
        values = dequantize(tensor.data, tensor.tensor_type)
        nonzero += int(np.count_nonzero(values))
    return params, nonzero


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """Elements stored per GGML type (``{"Q4_K": ..., "Q6_K": ..., "F32": ...}``): what a quantization wrote."""
    counts: dict[str, int] = {}
    for tensor in read_gguf(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + int(tensor.n_elements)
    return counts


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    """Each tensor's stored bytes by name (what a decoding step reads of it, read whole)."""
    return {tensor.name: int(tensor.n_bytes) for tensor in read_gguf(path).tensors}
