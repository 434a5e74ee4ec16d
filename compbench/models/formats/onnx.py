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


# ONNX element types stored two to a byte
NIBBLE_TYPES = ("INT4", "UINT4", "FLOAT4E2M1")


def initializer_bytes(tensor) -> int:
    """Bytes of an initializer's values, from its shape and element type (its data is not read: it may be
    external)."""
    import numpy as np
    import onnx

    elements = int(np.prod(tensor.dims, dtype=np.int64))
    if onnx.TensorProto.DataType.Name(tensor.data_type) in NIBBLE_TYPES:
        return (elements + 1) // 2
    return elements * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def graph_step_reads(model_file: Path) -> tuple[int, int]:
    """(bytes a decoding step reads whole, bytes of one row of each lookup table) of an ONNX graph, from its
    initializers as stored (ONNX Runtime runs them at their dtype): an initializer that only ``Gather`` nodes read
    along axis 0 (the embedding table, a position table) is looked up, one row per sequence a step; one that any
    other node reads (a tied LM head's ``Transpose``, a ``MatMulNBits`` weight and its scales) is read whole."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    readers: dict[str, list[bool]] = {}       # initializer -> for each node input reading it: a lookup?
    for node in all_nodes(graph):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append(node.op_type == "Gather" and index == 0 and axis == 0)
    whole = rows = 0
    for tensor in graph.initializer:
        size, read = initializer_bytes(tensor), readers.get(tensor.name, [])
        if read and all(read) and tensor.dims:
            rows += size // tensor.dims[0]
        elif read:
            whole += size
    return whole, rows


def all_nodes(graph):
    """The graph's nodes and those of its subgraphs (an ``If``'s branches)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from all_nodes(subgraph)
