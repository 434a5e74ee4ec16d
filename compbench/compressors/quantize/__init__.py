"""``quantize``: INT8 (and fp16) quantization, one compressor with the method as a parameter; one module per
library beside this one (``torch``, ``bitsandbytes``, ``torchao``, ``onnxruntime``, ``nncf``), each registering its
methods in ``METHODS``. Here: the parameters, what each method takes and writes (``METHOD_IO``), and the compressor.

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
- ``nncf-int8`` (encoders): NNCF's post-training static INT8 (``nncf.quantize``, transformer model type, SmoothQuant)
  of the model's fp32 OpenVINO IR, calibrated on seeded training rows; writes ``openvino`` (``int8-static``).
- ``nncf-int8-accuracy`` (encoders): NNCF's accuracy-controlled quantization: as ``nncf-int8``, then layers are
  reverted to float until the task's headline metric on held-out training rows (never the evaluation split) drops
  by at most ``max_drop``; writes ``openvino`` (``int8-mixed``), the reverted layers in the lineage.
- ``nncf-int8-wo``, ``nncf-int4``: NNCF's weight compression (``nncf.compress_weights``) of the fp32 IR (a causal
  LM: optimum-intel's stateful decoder); int4 optionally data-aware (AWQ, scale estimation, GPTQ) on the training
  text; writes ``openvino`` (``int8-weight-only``, ``int4-weight-only``); runs on openvino.
- ``gguf`` (causal LMs): a GGUF file of ``gguf_type`` (f32, f16, bf16 written from the fp32 model; q8_0, q6_k, q5_k_m,
  q4_k_m, q4_0 by llama.cpp's quantizer, optionally with an importance matrix from training text: ``imatrix``);
  writes ``gguf`` (precision: the type); runs on llamacpp.
"""

from __future__ import annotations

import shutil
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from compbench.compressors.base import CompressContext, Compressor, Stored, check_method_params
from compbench.models.artifact import ModelArtifact
from compbench.models.formats.gguf import FLOAT_TYPES as GGUF_FLOAT_TYPES

# (the NNCF methods first: the others' error message keeps its old tail)
Method = Literal["nncf-int8", "nncf-int8-accuracy", "nncf-int8-wo", "nncf-int4", "dynamic", "ort-dynamic", "ort-int4",
                 "ort-static", "bnb-int8", "bnb-nf4", "torchao-int8-weight-only", "torchao-int8-dynamic",
                 "torchao-int4-weight-only", "fp16", "ort-fp16", "gguf"]
QType = Literal["qint8", "quint8"]

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
    "nncf-int8": {"calibration_rows", "preset", "smooth_quant_alpha"},
    "nncf-int8-accuracy": {"calibration_rows", "preset", "smooth_quant_alpha", "max_drop", "drop_type",
                           "validation_rows"},
    "nncf-int8-wo": {"mode"},
    "nncf-int4": {"mode", "group_size", "ratio", "all_layers", "awq", "scale_estimation", "gptq", "calibration_rows"},
    "gguf": {"gguf_type", "imatrix", "calibration_rows"},
}
# Parameters only the NNCF methods read, added after the others' cache keys were made: left out of the others'
# dumps (where they are at their defaults anyway), so those keys stay as they were.
NNCF_ONLY = ("preset", "smooth_quant_alpha", "max_drop", "drop_type", "validation_rows", "mode", "ratio", "all_layers",
             "awq", "scale_estimation", "gptq")
GGUF_ONLY = ("gguf_type", "imatrix")       # likewise, for method gguf (added later still)
# A method's own default where it differs from the field's (the field's serves ort-static): NNCF's subset sizes
# (quantize: 300 samples; compress_weights: 128), and the modes optimum-intel picks by default for 8 and 4 bits.
METHOD_DEFAULTS: dict[str, dict] = {
    "nncf-int8": {"calibration_rows": 300},
    "nncf-int8-accuracy": {"calibration_rows": 300},
    "nncf-int8-wo": {"mode": "int8_asym"},
    "nncf-int4": {"calibration_rows": 128, "mode": "int4_asym"},
    "gguf": {"calibration_rows": 128},
}
DATA_AWARE = ("awq", "scale_estimation", "gptq")


class QuantizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = Field(description="dynamic, ort-dynamic, ort-int4, ort-static, bnb-int8, "
                           "bnb-nf4, torchao-int8-weight-only, torchao-int8-dynamic, torchao-int4-weight-only, "
                           "fp16, ort-fp16, nncf-int8, nncf-int8-accuracy, nncf-int8-wo, nncf-int4 or gguf")
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
    calibration_rows: int = Field(256, ge=1, description="ort-static, nncf-int8*: training rows seen during "
                                  "calibration (nncf-int8*: default 300); nncf-int4 with awq, scale_estimation or "
                                  "gptq: training text chunks of max_seq_len tokens (default 128)")
    percentile: float = Field(99.999, gt=90, le=100, description="ort-static with percentile calibration")
    threshold: float = Field(6.0, gt=0, description="bnb-int8: LLM.int8 outlier threshold")
    embeddings: bool = Field(True, description="dynamic: also store embedding tables as 8-bit (weight-only)")
    include_head: bool = Field(False, description="dynamic, torchao-*: quantize a causal LM's output head "
                               "(lm_head) too; it stays float by default")
    # 64, not torchao's 128: 128 does not divide SmolLM2's width (576), whose layers would then stay float
    group_size: Literal[32, 64, 128] = Field(64, description="torchao-int4-weight-only, nncf-int4: weights per "
                                             "scale and zero point; torchao (its CPU int4 kernel's sizes): a "
                                             "layer whose inputs it does not divide stays float (listed in "
                                             "torchao.json); nncf-int4: such a layer is an error")
    block_size: int = Field(32, ge=16, description="ort-int4: weights per scale (a power of two, at least 16)")
    symmetric: bool = Field(True, description="ort-int4: no zero points (scales only)")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="ort-int4: MatMulNBits compute type (4: int8 activations, the fast CPU path; "
        "None: onnxruntime's default, fp32)")
    # NNCF (nncf-* methods; defaults are NNCF's for a transformer unless said)
    preset: Literal["mixed", "performance"] = Field(
        "mixed", description="nncf-int8*: mixed (symmetric weights, asymmetric activations; NNCF's transformer "
        "default) or performance (both symmetric)")
    smooth_quant_alpha: float = Field(
        0.95, ge=-1, le=1, description="nncf-int8*: SmoothQuant's alpha for MatMuls (NNCF's transformer default "
        "0.95); negative: no SmoothQuant")
    max_drop: float = Field(0.01, ge=0, description="nncf-int8-accuracy: the largest drop of the task's headline "
                            "metric on held-out training rows that is accepted")
    drop_type: Literal["absolute", "relative"] = Field(
        "absolute", description="nncf-int8-accuracy: max_drop in metric units, or as a share of the fp32 value")
    validation_rows: int = Field(300, ge=2, description="nncf-int8-accuracy: training rows held out (seeded, "
                                 "never calibrated on; at most half of them) to measure the drop on")
    mode: Literal["int8_asym", "int8_sym", "int4_asym", "int4_sym"] | None = Field(
        None, description="nncf-int8-wo: int8_asym (default) or int8_sym; nncf-int4: int4_asym (default) or "
        "int4_sym")
    ratio: float = Field(1.0, gt=0, le=1, description="nncf-int4: share of the layers (by weights) in 4 bits, the "
                         "rest in int8_asym, chosen by NNCF's sensitivity metric")
    all_layers: bool = Field(False, description="nncf-int4: the embeddings and the last MatMul (lm_head) in 4 bits "
                             "too; by default NNCF keeps them in int8_asym")
    awq: bool = Field(False, description="nncf-int4: activation-aware weight quantization on training text")
    scale_estimation: bool = Field(False, description="nncf-int4: scales fitted to the layers' outputs on training "
                                   "text")
    gptq: bool = Field(False, description="nncf-int4: GPTQ on training text")
    gguf_type: Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"] = Field(
        "q8_0", description="gguf: the GGUF file's type (llama.cpp's names; f32/f16/bf16 written from the fp32 model)")
    imatrix: bool = Field(False, description="gguf (a quantized type): an importance matrix from calibration_rows "
                          "chunks of training text weights the quantizer's rounding error")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"block_size {value}: MatMulNBits takes a power of two (16, 32, 64, 128, ...)")
        return value

    @model_validator(mode="after")
    def _only_params_the_method_reads(self) -> "QuantizeParams":
        for name, value in METHOD_DEFAULTS.get(self.method, {}).items():
            if name not in self.model_fields_set:
                setattr(self, name, value)
        check_method_params(self, METHOD_PARAMS[self.method])
        if self.method == "nncf-int8-wo" and not self.mode.startswith("int8"):
            raise ValueError(f"method 'nncf-int8-wo' takes mode int8_asym or int8_sym, not {self.mode}")
        if self.method == "nncf-int4":
            if not self.mode.startswith("int4"):
                raise ValueError(f"method 'nncf-int4' takes mode int4_asym or int4_sym, not {self.mode}")
            data_aware = [name for name in DATA_AWARE if getattr(self, name)]
            if self.calibration_rows != METHOD_DEFAULTS["nncf-int4"]["calibration_rows"] and not data_aware:
                raise ValueError("nncf-int4 reads calibration_rows only with awq, scale_estimation or gptq "
                                 "(data-aware); without them it reads no data")
        if self.method == "gguf":
            if self.imatrix and self.gguf_type in GGUF_FLOAT_TYPES:
                raise ValueError(f"gguf_type {self.gguf_type} is not quantized: imatrix applies to q8_0, q6_k, "
                                 "q5_k_m, q4_k_m and q4_0")
            if self.calibration_rows != METHOD_DEFAULTS["gguf"]["calibration_rows"] and not self.imatrix:
                raise ValueError("gguf reads calibration_rows only with imatrix: true")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        for own, names in (("nncf-", NNCF_ONLY), ("gguf", GGUF_ONLY)):
            if not self.method.startswith(own):
                for name in names:
                    data.pop(name, None)
        return data


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
    # NNCF: the model's fp32 OpenVINO IR (models.openvino_export), converted from its ONNX export (encoders) or by
    # optimum-intel from the PyTorch model (causal LMs), so every PyTorch-loadable fp32 format
    "nncf-int8": (("hf", "hf-sparse", "hf-low-rank"), Stored("openvino", "int8-static")),
    "nncf-int8-accuracy": (("hf", "hf-sparse", "hf-low-rank"), Stored("openvino", "int8-mixed")),
    "nncf-int8-wo": (("hf", "hf-sparse", "hf-low-rank"), Stored("openvino", "int8-weight-only")),
    "nncf-int4": (("hf", "hf-sparse", "hf-low-rank"), Stored("openvino", "int4-weight-only")),
    # llama.cpp: the fp32 model written as an F32 GGUF file (a model PyTorch loads as plain Llama modules); the
    # precision is the file's type (produces)
    "gguf": (("hf", "hf-sparse"), Stored("gguf", "gguf")),
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
    # 5: causal LMs (lm_head float by default), torchao, nf4, ort-int4; 6: the source's parameter counts recorded
    code_version = "6"

    @classmethod
    def accepts(cls, params: QuantizeParams) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return METHOD_IO[params.method][0], ("fp32",)

    @classmethod
    def produces(cls, params: QuantizeParams) -> Stored:
        stored = METHOD_IO[params.method][1]
        return Stored(stored.format, params.gguf_type) if params.method == "gguf" else stored

    @classmethod
    def key_material(cls, params: QuantizeParams, resolve_model, base_dir=None) -> dict:
        """The NNCF methods' output also depends on OpenVINO, NNCF and optimum-intel (not among the libraries
        every step's key names) and on their own code version; the other methods' keys are unchanged."""
        if params.method.startswith("nncf-"):
            from compbench.compressors.quantize.nncf import key_material

            return key_material()
        if params.method == "gguf":
            from compbench.compressors.quantize.llamacpp import key_material

            return key_material()
        return {}

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        quantized = METHODS[self.params.method](model, self.params, ctx)
        quantized.keep_source_parameters(model)
        return quantized


def finish(model: ModelArtifact, ctx: CompressContext, *, fmt: str, precision: str) -> ModelArtifact:
    """Add the model config and tokenizer beside the written weights."""
    shutil.copyfile(model.path / "config.json", ctx.work_dir / "config.json")
    model.tokenizer().save_pretrained(ctx.work_dir)
    return ModelArtifact(
        path=ctx.work_dir, task=model.task, num_labels=model.num_labels, format=fmt, hash="", precision=precision,
        kind=model.kind,
    )


def library_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


# each library's methods register themselves in METHODS (imported last: they import the names above)
from compbench.compressors.quantize import bitsandbytes, llamacpp, nncf, onnxruntime, torch, torchao  # noqa: E402, F401
from compbench.compressors.quantize.onnxruntime import (  # noqa: E402, F401
    CALIBRATION,
    ENTROPY_CALIBRATION,
    QUANT_TYPES,
    STATIC_OP_TYPES,
    CalibrationRows,
)
