"""``quantize``'s NNCF methods, on the model's fp32 OpenVINO IR (``models.openvino_export.openvino_ir``: an encoder
converted from its ONNX export, a causal LM exported by optimum-intel as the stateful decoder), writing format
``openvino`` (``openvino_model.xml`` / ``.bin``, with the config and tokenizer; a causal LM's generation config too,
so ``OVModelForCausalLM`` loads the folder).

- ``nncf-int8`` (encoders): ``nncf.quantize`` with ``model_type=TRANSFORMER`` (NNCF's transformer pipeline:
  SmoothQuant at ``smooth_quant_alpha``, MinMax ranges, fast bias correction; ``preset`` mixed), calibrated on
  ``calibration_rows`` training rows (seeded with the suite's seed, as ort-static samples them), one row per
  sample at its own length (no padding token enters a range). FakeQuantize nodes on activations; the weights
  stored as int8 with a scale per output channel. Precision ``int8-static``.
- ``nncf-int8-accuracy`` (encoders): ``nncf.quantize_with_accuracy_control``: the same quantization, then NNCF
  reverts groups of quantized operations to float, the most harmful first, until the task's headline metric
  (``TaskSpec.metric_names[0]``, computed as the task computes it) on ``validation_rows`` held-out training rows
  drops by at most ``max_drop`` (``drop_type``) from the fp32 model's. The held-out rows are a seeded slice of the
  training split, disjoint from the calibration rows; the evaluation split is never read. The lineage records
  the metric before and after, and the operations reverted to float as NNCF reports them. Precision
  ``int8-mixed`` (int8, with the reverted operations in float).
- ``nncf-int8-wo``: ``nncf.compress_weights`` INT8 (``mode`` int8_asym, optimum-intel's default, or int8_sym): every
  MatMul and embedding weight in 8 bits, one scale (and zero point) per output channel; activations float.
  Precision ``int8-weight-only``.
- ``nncf-int4``: ``nncf.compress_weights`` INT4 (``mode`` int4_asym, optimum-intel's default, or int4_sym), groups
  of ``group_size`` weights (default 64: SmolLM2's width, 576, is divisible by 64, not by NNCF's default 128; a
  group size that does not divide a layer is an error), ``ratio`` of the weights in 4 bits and the rest in
  int8_asym (chosen by NNCF's sensitivity metric: weight quantization error without data, max activation variance
  with it). As NNCF does by default, the embeddings and the last MatMul (``lm_head``; tied to the embeddings in
  SmolLM2, one table) stay in int8_asym, per channel; ``all_layers`` puts them in 4 bits too. ``awq``,
  ``scale_estimation`` and ``gptq`` are data-aware: they read ``calibration_rows`` samples of the task's training
  text (a causal LM: chunks of ``max_seq_len`` tokens, seeded, each fed as the decoder's first call: input ids,
  attention mask, positions, beam index, a fresh KV state each; an encoder: training rows as for nncf-int8).
  Precision ``int4-weight-only``.

Every build checks that the IR it starts from holds no quantized weight, and records in the lineage the
parameters it wrote per precision (``weights``: int4 / int8 / float elements, from the IR). An error NNCF raises
is one line naming NNCF's version. The step's cache key also covers OpenVINO's, NNCF's and optimum-intel's versions
and this module's code version (``key_material``).
"""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from compbench.common.envinfo import package_versions
from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import DATA_AWARE, METHOD_IO, QuantizeParams, finish, method
from compbench.models.artifact import ModelArtifact
from compbench.models.formats.openvino import OPENVINO_XML, read_ir, weight_precisions
from compbench.tasks.encoding import encode_rows, encode_training_rows
from compbench.tasks.metrics import get_metric, higher_is_better, predictions_from_logits, wants_scores

# What the output depends on besides the step's own inputs: a change to this module's output bumps it.
CODE_VERSION = "1"
NNCF_LIBRARIES = ("openvino", "nncf", "optimum-intel")


def key_material() -> dict:
    return {"nncf_code_version": CODE_VERSION, "nncf_libraries": package_versions(NNCF_LIBRARIES)}


# ------------------------------------------------------------------------ static INT8 (encoders)

@method("nncf-int8")
def nncf_int8(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    nncf = _nncf()
    _encoder_only(model, params.method)
    source, folder = _source_ir(model)
    rows = ctx.data.train.sample(n=min(params.calibration_rows, len(ctx.data.train)), random_state=ctx.seed)
    calibration = _row_samples(model, ctx, rows, source)
    quantized = _calling_nncf(
        "quantize", nncf.quantize, source, nncf.Dataset(calibration), subset_size=len(calibration),
        **_quantization_options(nncf, params))
    details = {"calibration": _rows_record(rows, ctx.seed)}
    return _save(quantized, model, folder, ctx, params, details)


@method("nncf-int8-accuracy")
def nncf_int8_accuracy(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    nncf = _nncf()
    _encoder_only(model, params.method)
    task = ctx.data.task
    metric = task.metric_names[0]
    if not higher_is_better(metric):
        raise UnsupportedError(f"nncf-int8-accuracy needs a metric where higher is better (NNCF measures a drop); "
                               f"{task.name}'s headline metric {metric} is not")
    validation_rows, calibration_rows = held_out_split(ctx.data.train, params.validation_rows,
                                                       params.calibration_rows, ctx.seed)
    source, folder = _source_ir(model)
    calibration = _row_samples(model, ctx, calibration_rows, source)
    encoded = encode_rows(model.tokenizer(), task, validation_rows, ctx.max_seq_len)
    inputs = _row_samples(model, ctx, validation_rows, source, encoded=encoded)
    validation = list(zip(inputs, encoded.labels))
    validate = metric_of_rows(task)
    options = _quantization_options(nncf, params)
    with nncf_messages() as messages:
        quantized = _calling_nncf(
            "quantize_with_accuracy_control", nncf.quantize_with_accuracy_control, source,
            nncf.Dataset(calibration), nncf.Dataset(validation, lambda item: item[0]), validate,
            max_drop=params.max_drop, drop_type=nncf.DropType(params.drop_type), subset_size=len(calibration),
            preset=options["preset"], model_type=options["model_type"],
            advanced_quantization_parameters=options["advanced_parameters"])
    report = accuracy_control_report(messages)
    result = _score(quantized, validation, validate)
    reference = report.get("fp32")
    drop = None if reference is None else reference - result if params.drop_type == "absolute" else (
        (reference - result) / abs(reference) if reference else None)
    report.update(metric=metric, rows=len(validation), max_drop=params.max_drop, drop_type=params.drop_type,
                  result=round(result, 6), drop=None if drop is None else round(drop, 6),
                  reached=None if drop is None else bool(drop <= params.max_drop + 1e-12))
    details = {"calibration": _rows_record(calibration_rows, ctx.seed),
               "validation": {**_rows_record(validation_rows, ctx.seed), "split": "train (held out)"},
               "accuracy_control": report}
    ctx.reporter.log(f"  {task.name} nncf-int8-accuracy: {metric} on {len(validation)} held-out training rows "
                     f"{report.get('fp32')} (fp32) -> {report.get('quantized')} (int8) -> {report['result']}; "
                     f"{len(report['reverted_to_float'])} operations reverted to float")
    return _save(quantized, model, folder, ctx, params, details)


def _quantization_options(nncf, params: QuantizeParams) -> dict:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    smooth = AdvancedSmoothQuantParameters(matmul=params.smooth_quant_alpha)
    return {"preset": nncf.QuantizationPreset(params.preset), "model_type": nncf.ModelType.TRANSFORMER,
            "advanced_parameters": AdvancedQuantizationParameters(smooth_quant_alphas=smooth)}


def held_out_split(train: pd.DataFrame, validation_rows: int, calibration_rows: int,
                   seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows held out to validate on, rows to calibrate on): a seeded permutation of the training rows, the first
    ``validation_rows`` (at most half of them) held out, the next ``calibration_rows`` calibrated on."""
    held = min(validation_rows, len(train) // 2)
    if held < 2:
        raise UnsupportedError(f"nncf-int8-accuracy holds out training rows to measure the drop on; "
                               f"{len(train)} training rows are too few")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.iloc[np.sort(order[:held])], train.iloc[np.sort(order[held:held + calibration_rows])]


def metric_of_rows(task):
    """NNCF's ``validation_fn``: ``(compiled model, [(inputs, label), ...]) -> (the task's headline metric, a score
    per row)``; the per-row score (1 for a right class, minus the error of a regression or a probability) tells
    NNCF which rows the quantized model gets worse on."""
    metric = get_metric(task.metric_names[0])

    def validate(compiled, items) -> tuple[float, list[float]]:
        items = list(items)
        logits = np.concatenate([np.asarray(compiled(inputs)[0]) for inputs, _ in items])
        labels = np.asarray([label for _, label in items])
        predictions = predictions_from_logits(task, logits)
        return float(metric(predictions, labels)), row_scores(task, predictions, labels).tolist()

    return validate


def row_scores(task, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A score per row, higher when the prediction is better."""
    if wants_scores(task):      # log-probabilities of both classes: minus the error of the probability of class 1
        return -np.abs(np.exp(predictions[:, 1]) - labels.astype(np.float64))
    if task.is_regression:
        return -np.abs(predictions.astype(np.float64) - labels.astype(np.float64))
    if task.is_multi_label:
        return (predictions == labels).mean(axis=1).astype(np.float64)
    return (predictions == labels).astype(np.float64)


def _score(model, validation: list, validate) -> float:
    """The headline metric of ``model`` on the held-out rows, compiled as NNCF compiles it (fp32 inference)."""
    import openvino

    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return validate(compiled, validation)[0]


@contextmanager
def nncf_messages() -> Iterator[list[str]]:
    """The INFO messages NNCF logs meanwhile (its accuracy control reports what it did only there)."""
    from nncf.common.logging import nncf_logger

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    level = nncf_logger.level
    nncf_logger.addHandler(handler)
    if nncf_logger.getEffectiveLevel() > logging.INFO:
        nncf_logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        nncf_logger.removeHandler(handler)
        nncf_logger.setLevel(level)


def _number(text: str) -> float | None:
    try:
        return round(float(text), 6)
    except ValueError:
        return None


def accuracy_control_report(messages: list[str]) -> dict:
    """What NNCF's accuracy control logged: the metric of the fp32 and of the quantized model on the held-out rows,
    the number of quantized operations, and the operations it reverted to float (its final list; where it tried
    every group, ``all_reverted`` and the operations of each step)."""
    report: dict = {"reverted_to_float": [], "all_reverted": False}
    steps: list[str] = []
    for message in messages:
        if match := re.match(r"Metric of initial model: (\S+)", message):
            report["fp32"] = _number(match[1])
        elif match := re.match(r"Metric of quantized model: (\S+)", message):
            report["quantized"] = _number(match[1])
        elif match := re.match(r"Total number of quantized operations in the model: (\d+)", message):
            report["quantized_operations"] = int(match[1])
        elif match := re.match(r"(\d+) out of (\d+) were reverted back to the floating-point precision:\n(.*)",
                               message, re.S):
            report["reverted_to_float"] = [line.strip() for line in match[3].splitlines() if line.strip()]
            report["quantized_operations"] = int(match[2])
        elif match := re.match(r"Reverted \d+ operations to the floating-point precision: ?\n(.*)", message, re.S):
            steps += [line.strip() for line in match[1].splitlines() if line.strip()]
        elif message.startswith("All layers have been checked"):
            report["reverted_to_float"] = steps
            report["all_reverted"] = True
    return report


# ------------------------------------------------------------------------ weight compression

@method("nncf-int8-wo")
def nncf_int8_weight_only(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    nncf = _nncf()
    source, folder = _source_ir(model)
    compressed = _calling_nncf("compress_weights", nncf.compress_weights, source,
                               mode=nncf.CompressWeightsMode(params.mode))
    return _save(compressed, model, folder, ctx, params, {})


@method("nncf-int4")
def nncf_int4(model: ModelArtifact, params: QuantizeParams, ctx: CompressContext) -> ModelArtifact:
    nncf = _nncf()
    source, folder = _source_ir(model)
    options, details = {}, {}
    if any(getattr(params, name) for name in DATA_AWARE):
        if model.is_causal_lm:
            samples, details["calibration"] = _text_samples(model, ctx, params.calibration_rows, source)
        else:
            rows = ctx.data.train.sample(n=min(params.calibration_rows, len(ctx.data.train)), random_state=ctx.seed)
            samples, details["calibration"] = _row_samples(model, ctx, rows, source), _rows_record(rows, ctx.seed)
        options = {"dataset": nncf.Dataset(samples), "subset_size": len(samples)}
    details["nncf"] = {"sensitivity_metric": ("max_activation_variance" if options else "weight_quantization_error")
                       if params.ratio < 1 else None, "backup_mode": "int8_asym"}
    compressed = _calling_nncf(
        "compress_weights", nncf.compress_weights, source, mode=nncf.CompressWeightsMode(params.mode),
        group_size=params.group_size, ratio=params.ratio, all_layers=params.all_layers, awq=params.awq,
        scale_estimation=params.scale_estimation, gptq=params.gptq, **options)
    return _save(compressed, model, folder, ctx, params, details)


# ------------------------------------------------------------------------ shared

def _nncf():
    try:
        import nncf
        import openvino  # noqa: F401
    except ImportError as exc:
        raise UnsupportedError(f"the nncf-* methods need NNCF and OpenVINO ({exc.name} is not installed: pip "
                               "install 'compbench[openvino]', or scripts/setup.sh)") from None
    return nncf


def _encoder_only(model: ModelArtifact, method_name: str) -> None:
    if model.is_causal_lm:
        raise UnsupportedError(f"{method_name} calibrates an encoder on classification rows; for a causal LM use "
                               "nncf-int8-wo or nncf-int4 (weight compression)")


def _source_ir(model: ModelArtifact):
    """(the model's fp32 OpenVINO IR as an ``openvino.Model``, the folder it was read from)."""
    from compbench.models.openvino_export import openvino_ir

    folder = openvino_ir(model)
    source = read_ir(folder / OPENVINO_XML)
    stored = weight_precisions(source)
    quantized = {name: count for name, count in stored.items() if name != "float"}
    if quantized:
        raise UnsupportedError(f"the OpenVINO IR of {model.path} holds quantized weights already ({quantized}); "
                               "the nncf-* methods start from an fp32 model")
    return source, folder


def _calling_nncf(what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``; an error NNCF raises (a group size that does not divide a layer, an option
    this model or mode does not take) as one line."""
    import nncf
    import nncf.errors

    errors = tuple(value for value in vars(nncf.errors).values()
                   if isinstance(value, type) and issubclass(value, Exception))
    try:
        return function(*args, **kwargs)
    except errors as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if isinstance(exc, nncf.errors.InvalidGroupSizeError):
            reason += " (group_size must divide the input width of every layer compressed to 4 bits)"
        raise UnsupportedError(f"NNCF {nncf.__version__} {what}: {type(exc).__name__}: {reason}") from None


def _input_types(source) -> dict[str, np.dtype]:
    return {port.get_any_name(): port.get_element_type().to_dtype() for port in source.inputs}


def _row_samples(model: ModelArtifact, ctx: CompressContext, rows: pd.DataFrame, source,
                 encoded=None) -> list[dict[str, np.ndarray]]:
    """One sample per row, as the IR takes it: a batch of one at the row's own length (nothing padded)."""
    if encoded is None:
        encoded = encode_rows(model.tokenizer(), ctx.data.task, rows, ctx.max_seq_len)
    types = _input_types(source)
    missing = sorted(set(types) - set(encoded.features[0])) if len(encoded) else []
    if missing:
        raise UnsupportedError(f"the OpenVINO IR of {model.path} takes {', '.join(missing)}, which the task's "
                               "encoded rows do not have")
    return [{name: np.asarray([feature[name]], dtype=dtype) for name, dtype in types.items()}
            for feature in encoded.features]


# the inputs of optimum-intel's stateful decoder, for a first call (prefill) of one sequence
DECODER_INPUTS = {"input_ids", "attention_mask", "position_ids", "beam_idx"}


def _text_samples(model: ModelArtifact, ctx: CompressContext, count: int, source) -> tuple[list[dict], dict]:
    """``count`` seeded chunks of ``max_seq_len`` tokens of the task's training text, each as the stateful
    decoder's first call (NNCF resets the KV state before each), and the record of what was read."""
    types = _input_types(source)
    unknown = sorted(set(types) - DECODER_INPUTS)
    if unknown:
        raise UnsupportedError(f"the OpenVINO IR of {model.path} takes {', '.join(unknown)}: not a decoder whose "
                               "calibration inputs are known here")
    encoded = encode_training_rows(model.tokenizer(), ctx.data.task, ctx.data.train, ctx.max_seq_len)
    picked = np.sort(np.random.default_rng(ctx.seed).permutation(len(encoded))[:count])
    samples = []
    for index in picked:
        ids = encoded.features[index]["input_ids"]
        values = {"input_ids": [ids], "attention_mask": [[1] * len(ids)], "position_ids": [list(range(len(ids)))],
                  "beam_idx": [0]}
        samples.append({name: np.asarray(values[name], dtype=dtype) for name, dtype in types.items()})
    tokens = sum(len(encoded.features[index]["input_ids"]) for index in picked)
    record = {"split": "train", "chunks": len(samples), "tokens": tokens, "seed": ctx.seed,
              "chunks_digest": stable_hash(encoded.labels[picked].tolist())}
    return samples, record


def _rows_record(rows: pd.DataFrame, seed: int) -> dict:
    return {"split": "train", "rows": len(rows), "seed": seed, "rows_digest": stable_hash(rows.to_dict("list"))}


def _save(result, model: ModelArtifact, folder: Path, ctx: CompressContext, params: QuantizeParams,
          details: dict) -> ModelArtifact:
    """Write ``result`` (an ``openvino.Model``) as the artifact's IR at the precisions it holds (``save_model``
    would store fp16 by default), the generation config beside it, and the config and tokenizer."""
    import openvino

    openvino.save_model(result, str(ctx.work_dir / OPENVINO_XML), compress_to_fp16=False)
    for source in (folder, model.path):
        generation_config = source / "generation_config.json"
        if model.is_causal_lm and generation_config.exists():
            shutil.copyfile(generation_config, ctx.work_dir / generation_config.name)
            break
    artifact = finish(model, ctx, fmt="openvino", precision=METHOD_IO[params.method][1].precision)
    artifact.lineage = [{**details, "weights": weight_precisions(result), "nncf_version": _nncf().__version__}]
    return artifact
