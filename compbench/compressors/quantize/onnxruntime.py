"""``quantize``'s ONNX Runtime methods: ``ort-dynamic``, ``ort-int4`` (MatMulNBits), ``ort-static`` (QDQ, calibrated
on training rows) and ``ort-fp16``, each on the model's ONNX export; format ``onnx``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from compbench.common.errors import UnsupportedError
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import QuantizeParams, finish, method
from compbench.models.artifact import ModelArtifact
from compbench.models.onnx_export import ONNX_FILE
from compbench.tasks.encoding import encode_rows, pad_batch

# ort-static quantizing every op onnxruntime can (Add, Softmax inputs, ...) cost 11 accuracy points
# on the SST-2 teacher here; MatMul + Gather kept accuracy within a point at the same speed.
STATIC_OP_TYPES = ["MatMul", "Gather"]

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
    return finish(model, ctx, fmt="onnx", precision="int8-static")


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
    return finish(model, ctx, fmt="onnx", precision=precision)
