"""``quantize``: INT8 (and fp16) quantization, one compressor with the method as a parameter.

- ``dynamic``: PyTorch ``quantize_dynamic`` (INT8 ``nn.Linear`` weights, activations at run time); writes
  ``torch-int8-dynamic``; runs on torch CPU.
- ``ort-dynamic``: onnxruntime ``quantize_dynamic`` (INT8 weights, activations at run time); writes ``onnx``;
  runs on onnxruntime. A causal LM's decoder (exported with past key values) keeps its cache inputs and loads as
  optimum's ``ORTModelForCausalLM``; by default its embedding Gather and its lm_head (the folded transpose of a tied
  table) are quantized too. Measured on SmolLM2-135M (40 GLUE documents): per-tensor INT8 nearly doubles perplexity
  (33.1 -> 62.9), and neither is the cause (Gather fp32: 63.1; lm_head fp32: 60.9); ``per_channel`` breaks it (6e6).
- ``ort-int4``: onnxruntime's ``MatMulNBitsQuantizer``: 4-bit weight-only, one scale (and zero point unless
  symmetric) per ``block_size`` weights, MatMul into ``MatMulNBits``; writes ``onnx``; runs on onnxruntime.
- ``ort-static``: onnxruntime ``quantize_static``, QDQ, activations calibrated on training rows; writes ``onnx``;
  runs on onnxruntime.
- ``bnb-int8``: bitsandbytes LLM.int8 through transformers; writes ``hf`` (8-bit); runs on torch, where
  bitsandbytes supports the device.
- ``bnb-nf4``: bitsandbytes 4-bit NF4 (fp32 compute) through transformers; writes ``hf`` (4-bit); same.
- ``torchao-int8-weight-only``, ``torchao-int8-dynamic`` (int8 per-token activations x int8 weights),
  ``torchao-int4-weight-only`` (groups of ``group_size``, torchao's CPU int4 kernel): torchao's ``quantize_`` on
  every ``nn.Linear`` (a causal LM's ``lm_head`` only with ``include_head``); writes ``torchao`` (plain integers
  in safetensors); runs on torch (int4: CPU only).
- ``fp16``: half-precision weights; writes ``hf`` (fp16); runs on torch CUDA.
- ``ort-fp16``: onnxruntime's ``convert_float_to_float16`` on the fp32 ONNX export (fp32 inputs/outputs kept);
  writes ``onnx`` (fp16); runs on onnxruntime CUDA (the CPU provider runs it too, mostly in fp32 through
  inserted Casts).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compbench.common.errors import UnsupportedError
from compbench.compressors.base import CompressContext, Compressor, Stored, check_method_params
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.torch_int8 import QUANTIZATION_SPEC, QUANTIZED_STATE, quantize_dynamic_int8
from compbench.models.onnx_export import ONNX_FILE
from compbench.tasks.encoding import encode_rows, pad_batch

Method = Literal["dynamic", "ort-dynamic", "ort-int4", "ort-static", "bnb-int8", "bnb-nf4", "torchao-int8-weight-only",
                 "torchao-int8-dynamic", "torchao-int4-weight-only", "fp16", "ort-fp16"]
QType = Literal["qint8", "quint8"]

# ort-static quantizing every op onnxruntime can (Add, Softmax inputs, ...) cost 11 accuracy points
# on the SST-2 teacher here; MatMul + Gather kept accuracy within a point at the same speed.
STATIC_OP_TYPES = ["MatMul", "Gather"]

# Which parameters each method reads (setting another one is a mistake, not a no-op).
METHOD_PARAMS: dict[str, set[str]] = {
    "dynamic": {"embeddings", "include_head"},
    "ort-dynamic": {"per_channel", "weight_type", "op_types", "reduce_range"},
    "ort-int4": {"block_size", "symmetric", "accuracy_level"},
    "ort-static": {"per_channel", "weight_type", "activation_type", "op_types", "reduce_range",
                   "calibration_method", "calibration_rows", "percentile"},
    "bnb-int8": {"threshold"},
    "bnb-nf4": set(),
    "torchao-int8-weight-only": {"include_head"},
    "torchao-int8-dynamic": {"include_head"},
    "torchao-int4-weight-only": {"include_head", "group_size"},
    "fp16": set(),
    "ort-fp16": set(),
}


class QuantizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = Field(description="dynamic, ort-dynamic, ort-int4, ort-static, bnb-int8, "
                           "bnb-nf4, torchao-int8-weight-only, torchao-int8-dynamic, torchao-int4-weight-only, "
                           "fp16 or ort-fp16")
    per_channel: bool = Field(False, description="one scale per output channel (ORT methods)")
    weight_type: QType = "qint8"
    activation_type: QType = Field(
        "quint8", description="ort-static: activations' integer type (u8 x s8 is the fast x86 path)"
    )
    op_types: list[str] | None = Field(
        None,
        min_length=1,
        description="ONNX op types to quantize; default: onnxruntime's choice "
        "for ort-dynamic, MatMul and Gather for ort-static",
    )
    reduce_range: bool = Field(False, description="7-bit weights (for CPUs without VNNI that saturate u8s8)")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_rows: int = Field(256, ge=1, description="ort-static: training rows seen during calibration")
    percentile: float = Field(99.999, gt=90, le=100, description="ort-static with percentile calibration")
    threshold: float = Field(6.0, gt=0, description="bnb-int8: LLM.int8 outlier threshold")
    embeddings: bool = Field(True, description="dynamic: also store embedding tables as 8-bit (weight-only)")
    include_head: bool = Field(False, description="dynamic, torchao-*: quantize a causal LM's output head "
                               "(lm_head) too; it stays float by default")
    # 64, not torchao's 128: 128 does not divide SmolLM2's width (576), whose layers would then stay float
    group_size: Literal[32, 64, 128] = Field(64, description="torchao-int4-weight-only: weights per scale and "
                                             "zero point (what torchao's CPU int4 kernel takes); a layer whose "
                                             "inputs it does not divide stays float (listed in torchao.json)")
    block_size: int = Field(32, ge=16, description="ort-int4: weights per scale (a power of two, at least 16)")
    symmetric: bool = Field(True, description="ort-int4: no zero points (scales only)")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="ort-int4: MatMulNBits compute type (4: int8 activations, the fast CPU path; "
        "None: onnxruntime's default, fp32)")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"block_size {value}: MatMulNBits takes a power of two (16, 32, 64, 128, ...)")
        return value

    @model_validator(mode="after")
    def _only_params_the_method_reads(self) -> "QuantizeParams":
        check_method_params(self, METHOD_PARAMS[self.method])
        return self


# What each method takes (input formats) and writes. The PyTorch methods rebuild plain modules (a sparse-stored
# model loads dense; factorised layers would be lost); the ONNX Runtime methods read the model's ONNX export,
# which every PyTorch-loadable format has; bitsandbytes loads the folder with from_pretrained (plain hf only).
METHOD_IO: dict[str, tuple[tuple[str, ...], Stored]] = {
    "dynamic": (("hf", "hf-sparse"), Stored("torch-int8-dynamic", "int8-dynamic")),
    "ort-dynamic": (("hf", "hf-sparse", "hf-low-rank"), Stored("onnx", "int8-dynamic")),
    "ort-int4": (("hf", "hf-sparse", "hf-low-rank"), Stored("onnx", "int4")),
    "ort-static": (("hf", "hf-sparse", "hf-low-rank"), Stored("onnx", "int8-static")),
    "bnb-int8": (("hf",), Stored("hf", "int8-bnb")),
    "bnb-nf4": (("hf",), Stored("hf", "nf4-bnb")),
    "torchao-int8-weight-only": (("hf", "hf-sparse"), Stored("torchao", "int8-weight-only")),
    "torchao-int8-dynamic": (("hf", "hf-sparse"), Stored("torchao", "int8-dynamic")),
    "torchao-int4-weight-only": (("hf", "hf-sparse"), Stored("torchao", "int4-weight-only")),
    "fp16": (("hf", "hf-sparse"), Stored("hf", "fp16")),
    "ort-fp16": (("hf", "hf-sparse", "hf-low-rank"), Stored("onnx", "fp16")),
}
Quantizer = Callable[[ModelArtifact, QuantizeParams, CompressContext], ModelArtifact]
METHODS: dict[str, Quantizer] = {}


def method(name: str):
    def register(function: Quantizer) -> Quantizer:
        METHODS[name] = function
        return function
    return register


class Quantize(Compressor):
    name = "quantize"
    Params = QuantizeParams
    code_version = "5"   # 5: causal LMs (lm_head float by default), torchao, nf4, ort-int4

    @classmethod
    def accepts(cls, params: QuantizeParams) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return METHOD_IO[params.method][0], ("fp32",)

    @classmethod
    def produces(cls, params: QuantizeParams) -> Stored:
        return METHOD_IO[params.method][1]

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        return METHODS[self.params.method](model, self.params, ctx)


# ------------------------------------------------------------------------ PyTorch

@method("dynamic")
def torch_dynamic(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    import torch

    quantized = quantize_dynamic_int8(model.torch_model().eval(), embeddings=params.embeddings,
                                      include_head=params.include_head)
    torch.save(quantized.state_dict(), ctx.work_dir / QUANTIZED_STATE)
    spec = {"embeddings": params.embeddings, "include_head": params.include_head}
    (ctx.work_dir / QUANTIZATION_SPEC).write_text(json.dumps(spec))
    return _finish(model, ctx, fmt="torch-int8-dynamic", precision="int8-dynamic")


@method("bnb-int8")
def bnb_int8(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=params.threshold)
    return _bitsandbytes(model, ctx, config, what="LLM.int8", precision="int8-bnb")


@method("bnb-nf4")
def bnb_nf4(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    import torch
    from transformers import BitsAndBytesConfig

    # compute dtype fp32: the model's own precision, so the 4-bit weights are the only change
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    return _bitsandbytes(model, ctx, config, what="NF4", precision="nf4-bnb")


def _bitsandbytes(model: ModelArtifact, ctx: CompressContext, config, *, what: str, precision: str) -> ModelArtifact:
    """Load the folder through transformers with a BitsAndBytesConfig (transformers leaves the output head float)
    and save it; bitsandbytes 0.50 runs both on CPU too."""
    import torch

    from compbench.models.kinds import auto_model_class

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        # dtype: without it transformers casts every layer bitsandbytes leaves alone (embeddings,
        # LayerNorm, biases, the head) to fp16, a second compression this method does not name
        quantized = auto_model_class(model.kind).from_pretrained(
            model.path, quantization_config=config, device_map=device, dtype=torch.float32
        )
    except Exception as exc:  # no bitsandbytes, or a build without kernels for this device
        raise UnsupportedError(
            f"bitsandbytes ({_version('bitsandbytes')}) cannot run {what} on {device}: {type(exc).__name__}: {exc}"
        ) from None
    return save_hf_artifact(
        ctx.work_dir, quantized, model.tokenizer(), task=model.task, lineage=[], precision=precision
    )


def _torchao(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext, scheme: str) -> ModelArtifact:
    from compbench.models.formats.torchao import quantize_torchao, save_torchao

    group_size = params.group_size if scheme == "int4-weight-only" else None
    quantized, spec, plain = quantize_torchao(model.torch_model().eval(), scheme, include_head=params.include_head,
                                              group_size=group_size)
    save_torchao(ctx.work_dir, quantized, spec, plain)
    return _finish(model, ctx, fmt="torchao", precision=METHOD_IO[params.method][1].precision)


@method("torchao-int8-weight-only")
def torchao_int8_weight_only(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int8-weight-only")


@method("torchao-int8-dynamic")
def torchao_int8_dynamic(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int8-dynamic")


@method("torchao-int4-weight-only")
def torchao_int4_weight_only(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return _torchao(model, params, ctx, "int4-weight-only")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@method("fp16")
def fp16(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    return save_hf_artifact(
        ctx.work_dir, model.torch_model().half(), model.tokenizer(), task=model.task, lineage=[], precision="fp16"
    )


# ------------------------------------------------------------------------ ONNX Runtime

QUANT_TYPES = {"qint8": "QInt8", "quint8": "QUInt8"}
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@method("ort-dynamic")
def ort_dynamic(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _preprocessed_onnx(model) as source:
        quantize_dynamic(
            source,
            ctx.work_dir / ONNX_FILE,
            weight_type=getattr(QuantType, QUANT_TYPES[params.weight_type]),
            per_channel=params.per_channel,
            reduce_range=params.reduce_range,
            op_types_to_quantize=params.op_types,
        )
    return _finish_onnx(model, ctx, precision="int8-dynamic")


@method("ort-int4")
def ort_int4(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    """Every MatMul with a constant weight as ``MatMulNBits``: 4-bit weights in blocks of ``block_size`` along the
    input dimension, de-quantized inside the kernel; activations stay fp32 (or int8 with ``accuracy_level`` 4).

    On the pre-processed graph: a causal LM with tied embeddings is exported with its lm_head as
    ``MatMul(x, Transpose(embedding table))``, which the quantizer skips (no constant weight); pre-processing folds
    the Transpose, so the lm_head (the largest matrix of a small LM) is quantized too. Gathers (the embedding table)
    keep fp32: the quantizer's default op types are MatMul only, and its own note says a quantized Gather saves no
    run-time memory."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _preprocessed_onnx(model) as source:
        quantizer = MatMulNBitsQuantizer(str(source), bits=4, block_size=params.block_size,
                                         is_symmetric=params.symmetric, accuracy_level=params.accuracy_level)
        quantizer.process()
    if not any(node.op_type == "MatMulNBits" for node in quantizer.model.nodes()):
        raise UnsupportedError(f"MatMulNBitsQuantizer quantized no MatMul of {model.path} (block_size "
                               f"{params.block_size}: no constant 2-D MatMul weight fits it)")
    quantizer.model.save_model_to_file(str(ctx.work_dir / ONNX_FILE), use_external_data_format=False)
    return _finish_onnx(model, ctx, precision="int4")


@method("ort-static")
def ort_static(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if model.is_causal_lm:
        raise UnsupportedError("ort-static calibrates on classification rows (input_ids, attention_mask); a causal "
                               "LM's decoder also takes position_ids and past key values, which no reader here feeds")
    reader = CalibrationRows(model, ctx, params.calibration_rows)
    op_types = params.op_types or STATIC_OP_TYPES
    extra = {"CalibPercentile": params.percentile} if params.calibration_method == "percentile" else {}
    with _preprocessed_onnx(model) as source:
        reader.input_names = _input_names(source)
        ranges = {}
        if params.calibration_method == "entropy":
            ranges["calibration_cache_path"] = _entropy_ranges(source, reader, op_types)
        quantize_static(
            source,
            ctx.work_dir / ONNX_FILE,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=params.per_channel,
            reduce_range=params.reduce_range,
            activation_type=getattr(QuantType, QUANT_TYPES[params.activation_type]),
            weight_type=getattr(QuantType, QUANT_TYPES[params.weight_type]),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION[params.calibration_method]),
            extra_options=extra,
            **ranges,
        )
    return _finish(model, ctx, fmt="onnx", precision="int8-static")


@method("ort-fp16")
def ort_fp16(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    """The fp32 ONNX export with every float tensor it can hold in fp16, by onnxruntime's converter.

    ``keep_io_types``: graph inputs and outputs keep their types (the int64 ids are not float
    anyway; the logits stay fp32 behind a Cast), so sessions feed and read it like the fp32 model.
    The default op block list (float16.DEFAULT_OP_BLOCK_LIST: ai.onnx.ml ops, Range, Min, Max,
    CumSum, TopK, ...) stays fp32 with Casts around it; a BERT export has none of those on its
    float path. Values beyond fp16's range are clamped (the attention mask's -3.4e38 becomes -65504).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # a path, not a loaded model: the converter runs shape inference on the file (infer_shapes_path)
    converted = convert_float_to_float16(str(model.onnx_files()[0]), keep_io_types=True)
    onnx.save_model(converted, str(ctx.work_dir / ONNX_FILE))
    return _finish_onnx(model, ctx, precision="fp16")


# quantize_static builds its entropy calibrator with 128 histogram bins and 128 quantized bins: that
# leaves one candidate threshold, the full min-max range, so "entropy" gave exactly the minmax model.
# With 2048 bins (TensorRT's histogram size) the KL search has thresholds to choose from; onnxruntime's
# search is pure Python, about 0.5 s per calibrated tensor (20 s for a 2-layer BERT).
ENTROPY_CALIBRATION = {"num_bins": 2048, "num_quantized_bins": 128}


def _entropy_ranges(source: Path, reader: CalibrationRows, op_types: list[str]) -> Path:
    """Entropy-calibrated activation ranges of ``source``, saved as a quantize_static calibration cache."""
    import inspect

    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise UnsupportedError(
            f"entropy calibration needs an onnxruntime whose quantize_static takes calibration_cache_path "
            f"(this is {onnxruntime.__version__}); use calibration_method minmax or percentile"
        )
    from onnxruntime.quantization.calibrate import save_tensors_data

    calibrator = create_calibrator(source, op_types, augmented_model_path=str(source.parent / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options=ENTROPY_CALIBRATION)
    calibrator.collect_data(reader)
    cache = source.parent / "calibration.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


class CalibrationRows:
    """onnxruntime ``CalibrationDataReader`` over a seeded sample of the task's training rows."""

    batch_size = 16

    def __init__(self, model: ModelArtifact, ctx: CompressContext, rows: int) -> None:
        train = ctx.data.train
        sample = train.sample(n=min(rows, len(train)), random_state=ctx.seed)
        tokenizer = model.tokenizer()
        encoded = encode_rows(tokenizer, ctx.data.task, sample, ctx.max_seq_len)
        # one fixed shape: entropy and percentile calibration stack activations across batches
        self.batches = [pad_batch(tokenizer, encoded.features[start:start + self.batch_size], length=ctx.max_seq_len)
                        for start in range(0, len(encoded), self.batch_size)]
        self.input_names: list[str] = []
        self._next = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._next, None)
        return None if batch is None else {name: batch[name] for name in self.input_names}

    def rewind(self) -> None:
        self._next = iter(self.batches)


class _preprocessed_onnx:
    """The model's ONNX graph after onnxruntime's quantization pre-processing (shape inference
    and graph optimisation), in a temporary folder outside the artifact."""

    def __init__(self, model: ModelArtifact) -> None:
        self.model = model

    def __enter__(self) -> Path:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.folder = Path(tempfile.mkdtemp(prefix="compbench-quant-"))
        target = self.folder / "preprocessed.onnx"
        quant_pre_process(str(self.model.onnx_files()[0]), str(target), skip_symbolic_shape=True)
        return target

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _input_names(onnx_file: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(onnx_file), load_external_data=False).graph.input]


def _finish_onnx(model: ModelArtifact, ctx: CompressContext, *, precision: str) -> ModelArtifact:
    """An ``onnx`` artifact; a causal LM's also keeps its generation config, which ``ORTModelForCausalLM`` reads
    from the graph's folder (without it, greedy decoding would lose the model's own settings: eos, pad)."""
    generation_config = model.path / "generation_config.json"
    if generation_config.exists():
        shutil.copyfile(generation_config, ctx.work_dir / generation_config.name)
    return _finish(model, ctx, fmt="onnx", precision=precision)


def _finish(model: ModelArtifact, ctx: CompressContext, *, fmt: str, precision: str) -> ModelArtifact:
    """Add the model config and tokenizer beside the written weights."""
    shutil.copyfile(model.path / "config.json", ctx.work_dir / "config.json")
    model.tokenizer().save_pretrained(ctx.work_dir)
    return ModelArtifact(
        path=ctx.work_dir, task=model.task, num_labels=model.num_labels, format=fmt, hash="", precision=precision,
        kind=model.kind,
    )
