"""``openvino``: an OpenVINO IR (``openvino_model.xml`` + ``openvino_model.bin``, optimum-intel's names, so that
``OVModelForCausalLM.from_pretrained(folder)`` loads a causal LM) with ``config.json``, the tokenizer and, for a
causal LM, ``generation_config.json``. Written by the NNCF ``quantize`` methods (INT8 with FakeQuantize nodes on
activations, weights as integers; or weight-only INT8/INT4).

Parameters are counted from the IR's constants the way a PyTorch model's ``numel`` counts them, so that a quantized
model keeps its source's count:

- a quantized weight (an integer constant that a decompression chain ``Convert -> [Subtract zero point] ->
  Multiply scale`` turns into floats) counts its logical elements: a ``u4``/``i4`` constant stores two per byte
  and counts both; its scales and zero points are not parameters;
- a float constant of more than one element counts, except the ranges of ``FakeQuantize`` nodes, the scales of
  decompression chains, NNCF's SmoothQuant scales (``nncf_smooth_quant``: activations divided, weights multiplied,
  nothing learned) and a float table a ``MatMul`` reads as its first input (the rotary frequencies, a buffer in
  PyTorch); integer constants outside decompression chains are shapes and indices.

What the converters fold away is not there to count: a bias of zeros or a norm weight of ones (a randomly
initialised model's) becomes no operation, so such a model's IR counts fewer parameters than its PyTorch module;
a trained model's counts the same. Non-zero parameters are those whose de-quantized value is not zero (a weight
equal to its zero point, or a zero scale, is a real zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compbench.common.errors import UnreadableArtifactError
from compbench.models.formats.base import ArtifactFormat, register_format

OPENVINO_XML = "openvino_model.xml"
OPENVINO_BIN = "openvino_model.bin"

FLOAT_TYPES = ("f64", "f32", "f16", "bf16")
# NNCF's SmoothQuant names the constant of each Multiply it inserts after this
SMOOTH_QUANT = "nncf_smooth_quant"


@register_format
class OpenVinoFormat(ArtifactFormat):
    """OpenVINO IR (``openvino_model.xml`` / ``.bin``) with the model config and tokenizer."""

    name = "openvino"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / OPENVINO_XML, folder / OPENVINO_BIN, folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        return ir_parameter_counts(read_ir(folder / OPENVINO_XML))


def read_ir(xml: Path):
    """The ``openvino.Model`` in ``xml`` (its weights from the ``.bin`` beside it); an unreadable pair is an error
    naming the folder."""
    import openvino

    try:
        return openvino.Core().read_model(str(xml))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableArtifactError(f"{xml}: not a readable OpenVINO IR ({reason}); remove the artifact folder "
                                      f"{Path(xml).parent} and it is built again") from None


def _consumers(output) -> list[tuple[str, int, object]]:
    return [(target.get_node().get_type_name(), target.get_index(), target.get_node())
            for target in output.get_target_inputs()]


def _through_convert(node) -> list[tuple[str, int, object]]:
    """The consumers of ``node``'s output, looking through ``Convert`` nodes."""
    found = []
    for kind, index, consumer in _consumers(node.output(0)):
        if kind == "Convert":
            found += _through_convert(consumer)
        else:
            found.append((kind, index, consumer))
    return found


def _source_constant(node):
    """The Constant behind ``node`` (itself, or through ``Convert`` nodes), else None."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def constant_values(constant) -> np.ndarray:
    """A Constant's values as a numpy array of its logical shape: ``u4``/``i4`` unpacked (two per byte, the first
    in the low nibble), other integers and floats as stored (bf16 as float32)."""
    kind = constant.get_element_type().get_type_name()
    shape = tuple(constant.get_output_shape(0))
    if kind in ("u4", "i4"):
        packed = np.asarray(constant.get_data()).view(np.uint8).reshape(-1)
        values = np.empty(packed.size * 2, dtype=np.int8)
        values[0::2] = packed & 0x0F
        values[1::2] = packed >> 4
        if kind == "i4":
            values = np.where(values > 7, values - 16, values).astype(np.int8)
        return values[:int(np.prod(shape, dtype=np.int64))].reshape(shape)
    if kind == "bf16":
        return constant.get_vector().astype(np.float32).reshape(shape)   # numpy has no bf16
    return np.asarray(constant.get_data()).reshape(shape)


def _decompression(constant):
    """For an integer weight constant: (zero point constant or None, scale constant) of the chain
    ``Convert -> [Subtract zero point] -> Multiply scale`` that de-quantizes it; None when it is not one."""
    zero_point = None
    users = _through_convert(constant)
    if len(users) != 1:
        return None
    kind, index, node = users[0]
    if kind == "Subtract" and index == 0:
        zero_point = _source_constant(node.input_value(1).get_node())
        users = _consumers(node.output(0))
        if zero_point is None or len(users) != 1:
            return None
        kind, index, node = users[0]
    if kind != "Multiply":
        return None
    scale = _source_constant(node.input_value(1 - index).get_node())
    return None if scale is None else (zero_point, scale)


@dataclass(frozen=True)
class IrWeight:
    """One parameter tensor of an IR: its constant's name, stored element type (``u4``, ``i8``, ``f32``, ...),
    elements, and elements whose (de-quantized) value is not zero."""

    name: str
    element_type: str
    size: int
    nonzero: int

    @property
    def precision(self) -> str:
        """int4, int8 (any 4- or 8-bit integer type) or float."""
        if self.element_type in FLOAT_TYPES:
            return "float"
        return "int4" if self.element_type in ("u4", "i4", "nf4") else "int8" if self.element_type in (
            "u8", "i8") else self.element_type


def ir_weights(model) -> list[IrWeight]:
    """The parameter tensors of an ``openvino.Model`` (see the module docstring for what counts)."""
    constants = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    not_parameters: set[str] = set()
    quantized = []
    for constant in constants:
        kind = constant.get_element_type().get_type_name()
        if kind in FLOAT_TYPES or kind == "boolean":
            continue
        chain = _decompression(constant)
        if chain is None:
            continue
        zero_point, scale = chain
        quantized.append((constant, zero_point, scale))
        not_parameters.update(c.get_name() for c in (zero_point, scale) if c is not None)
    quantized_names = {constant.get_name() for constant, _, _ in quantized}

    found = []
    for constant, zero_point, scale in quantized:
        values = constant_values(constant).astype(np.float32)
        if zero_point is not None:
            values = values - constant_values(zero_point).astype(np.float32)
        values = values * constant_values(scale).astype(np.float32)
        found.append(IrWeight(constant.get_friendly_name(), constant.get_element_type().get_type_name(), values.size,
                              int(np.count_nonzero(values))))
    for constant in constants:
        if (constant.get_element_type().get_type_name() not in FLOAT_TYPES
                or constant.get_name() in not_parameters or constant.get_name() in quantized_names
                or SMOOTH_QUANT in constant.get_friendly_name()):
            continue
        users = _through_convert(constant)
        if any(kind == "FakeQuantize" for kind, _, _ in users):
            continue
        if users and all(kind == "MatMul" and index == 0 for kind, index, _ in users):
            continue    # a table the graph multiplies by (rotary frequencies), not a weight
        values = constant_values(constant)
        if values.size > 1:
            found.append(IrWeight(constant.get_friendly_name(), constant.get_element_type().get_type_name(),
                                  values.size, int(np.count_nonzero(values))))
    return found


def ir_parameter_counts(model) -> tuple[int, int]:
    """(parameters, non-zero parameters) of an ``openvino.Model``."""
    weights = ir_weights(model)
    return sum(w.size for w in weights), sum(w.nonzero for w in weights)


def weight_precisions(model) -> dict[str, int]:
    """Parameters of an ``openvino.Model`` by stored precision: ``{"int4": n, "int8": n, "float": n}`` (those
    present)."""
    totals: dict[str, int] = {}
    for weight in ir_weights(model):
        totals[weight.precision] = totals.get(weight.precision, 0) + weight.size
    return totals


# Ops a weight's values pass through on their way to the op that reads them (de-quantization, reshapes)
PASS_THROUGH = ("Convert", "Subtract", "Multiply", "Reshape")


def _readers(node) -> list[tuple[str, int, object]]:
    """The ops that read ``node``'s values, looking through ``PASS_THROUGH`` ops."""
    found = []
    for kind, index, consumer in _consumers(node.output(0)):
        if kind in PASS_THROUGH:
            found += _readers(consumer)
        else:
            found.append((kind, index, consumer))
    return found


def _is_lookup(kind: str, index: int, node) -> bool:
    """A ``Gather`` along axis 0 of the values it reads (an embedding lookup)."""
    if kind != "Gather" or index != 0:
        return False
    axis = _source_constant(node.input_value(2).get_node())
    return axis is not None and int(np.asarray(axis.get_data()).reshape(-1)[0]) == 0


def ir_step_reads(model, float_bytes: float | None = None) -> tuple[int, int]:
    """(bytes a decoding step reads whole, bytes of one row of each lookup table) of an ``openvino.Model``, from its
    constants: integer weights at their stored width with their scales and zero points; float weights at
    ``float_bytes`` each where given (the CPU plugin holds them at its inference precision: f32 IR weights as bf16
    under a bf16 hint) else as stored. A constant whose values only reach ``Gather`` along axis 0 (an embedding
    table, de-quantized or not) is looked up, one row per sequence a step; any other is read whole."""
    scales = {c.get_name() for constant in model.get_ordered_ops() if constant.get_type_name() == "Constant"
              and constant.get_element_type().get_type_name() not in FLOAT_TYPES
              for c in (_decompression(constant) or ()) if c is not None}
    whole = rows = 0
    for constant in model.get_ordered_ops():
        if constant.get_type_name() != "Constant":
            continue
        shape = tuple(constant.get_output_shape(0))
        elements = int(np.prod(shape, dtype=np.int64))
        kind = constant.get_element_type()
        held = (float_bytes if float_bytes and kind.get_type_name() in FLOAT_TYPES
                and constant.get_name() not in scales else kind.bitwidth / 8)
        size = int(elements * held)
        readers = _readers(constant)
        if readers and all(_is_lookup(*reader) for reader in readers) and shape and shape[0] > 1:
            rows += size // shape[0]
        else:
            whole += size
    return whole, rows
