"""``onnx``: an ONNX graph (for example ONNX Runtime-quantized) with the model config and tokenizer.
"""

from __future__ import annotations

from collections import defaultdict
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
        """Elements of the graph's weights (``onnx_weights``)."""
        import onnx

        weights = onnx_weights(onnx.load(str(folder / ONNX_FILE), load_external_data=True).graph)
        return sum(count for _, count, _ in weights), sum(nonzero for _, _, nonzero in weights)

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


# ... and the quantized tensor itself: "<weight>_quantized" (QDQ, dynamic), "<weight>_Q4" (MatMulNBits)
QUANTIZED_SUFFIXES = ("_quantized", "_Q2", "_Q4", "_Q8")
# onnxruntime's pre-processing folds ``Transpose(table)`` into a new initializer "<table>_transposed": a causal LM's
# lm_head tied to its embedding table, one parameter stored twice
TRANSPOSED = "_transposed"


def onnx_weights(graph) -> list[tuple[str, int, int]]:
    """(initializer, parameters, non-zero parameters) of each weight of an ONNX graph, counted the way PyTorch counts
    the module's: a quantized weight counts its logical elements (a MatMulNBits weight ``N x K``, however packed),
    non-zero those that de-quantize to non-zero. Not weights: scales and zero points; scalars; integer tensors other
    than quantized weights (shapes, indices); a float table that the graph only broadcasts (``Expand``: a Llama's
    rotary frequencies, a buffer in PyTorch); a tied table's folded transpose (``TRANSPOSED``)."""
    from onnx import numpy_helper

    initializers = {initializer.name: initializer for initializer in graph.initializer}
    readers, packed, packed_parts = defaultdict(set), {}, set()
    for node in graph.node:
        for name in node.input:
            readers[name].add(node.op_type)
        if node.op_type == "MatMulNBits":
            packed[node.input[1]] = node
            packed_parts.update(node.input[2:5])       # scales, zero points, g_idx (a bias, input 5, is a weight)
    bases = {_unquantized(name) for name in initializers}
    found = []
    for name, initializer in initializers.items():
        base = _unquantized(name)
        if (name in packed_parts or name.endswith(QUANTIZATION_PARAMETER_SUFFIXES)
                or (base.endswith(TRANSPOSED) and base.removesuffix(TRANSPOSED) in bases)):
            continue
        if name in packed:
            found.append((name, *_nbits_counts(packed[name], initializers)))
            continue
        values = numpy_helper.to_array(initializer)
        kind = values.dtype.kind
        if values.size <= 1:
            continue
        if kind == "f" and readers[name] == {"Expand"}:
            continue
        if kind != "f" and not (kind in "iu" and (name != base or values.dtype.itemsize == 1)):
            continue
        found.append((name, values.size, _nonzero(values, initializers.get(base + "_zero_point"))))
    return found


def _unquantized(name: str) -> str:
    return next((name.removesuffix(suffix) for suffix in QUANTIZED_SUFFIXES if name.endswith(suffix)), name)


def _nonzero(values, zero_point) -> int:
    """Elements of ``values`` that are not their zero point (per tensor, or per channel along the last axis that
    fits: onnxruntime's per-channel MatMul weights are ``K x N`` with one zero point per output column)."""
    import numpy as np
    from onnx import numpy_helper

    zero = 0 if zero_point is None else numpy_helper.to_array(zero_point)
    if np.size(zero) > 1 and values.shape[-1] != np.size(zero):
        zero = np.reshape(zero, (-1,) + (1,) * (values.ndim - 1))
    return int(np.count_nonzero(values != zero))


def _nbits_counts(node, initializers: dict) -> tuple[int, int]:
    """(N x K, non-zero elements) of a ``MatMulNBits`` weight: ``bits``-bit values, low bits first in each byte, in
    blocks of ``block_size`` along K (the last block padded), each value ``(q - zero point) x scale`` with its
    block's scale and zero point (packed the same way; without any, the middle value ``2 ** (bits - 1)``)."""
    import numpy as np
    from onnx import helper, numpy_helper

    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    n, k, bits, block = attributes["N"], attributes["K"], attributes.get("bits", 4), attributes["block_size"]
    blocks = -(-k // block)
    values = _unpacked(numpy_helper.to_array(initializers[node.input[1]]).reshape(n, -1), bits)[:, :blocks * block]
    scales = numpy_helper.to_array(initializers[node.input[2]]).reshape(n, blocks)
    zero_name = node.input[3] if len(node.input) > 3 else ""
    zero = numpy_helper.to_array(initializers[zero_name]) if zero_name else np.full((n, blocks), 2 ** (bits - 1))
    if zero.dtype == np.uint8:
        zero = _unpacked(zero.reshape(n, -1), bits)[:, :blocks]
    zero = zero.reshape(n, blocks)      # float zero points: one a block, unpacked
    value_is_zero = (values.reshape(n, blocks, block) == zero[..., None]) | (scales[..., None] == 0)
    return n * k, int(np.count_nonzero(~value_is_zero.reshape(n, -1)[:, :k]))


def _unpacked(packed, bits: int):
    """The ``bits``-bit values packed in each row of the uint8 array ``packed``, low bits first."""
    import numpy as np

    mask = (1 << bits) - 1
    return np.stack([(packed >> shift) & mask for shift in range(0, 8, bits)], axis=-1).reshape(packed.shape[0], -1)
