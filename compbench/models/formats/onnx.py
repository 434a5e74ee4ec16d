"""``onnx``: an ONNX graph (for example ONNX Runtime-quantized) with the model config and tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from compbench.models.formats.base import ArtifactFormat, onnx_model_files, register_format
from compbench.models.onnx_export import ONNX_FILE


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
