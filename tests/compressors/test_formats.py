"""Every compressor after every format: it gives the same logits as its input within the method's
tolerance, or it is refused with the reason, never a model that silently lost its weights (svd then
bnb-int8 used to reload factorised layers as random ones and report ``ok``).

The input is a tiny BERT built so that the lossy methods are exact on it: every encoder Linear has
rank 4 (SVD at rank 4 loses nothing), one attention head per layer and a quarter of each FFN's
neurons are dead (zero weights in and out: pruning them, or a quarter of each layer's weights by
magnitude, loses nothing). Only quantization changes the numbers, within its precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compbench.backends.base import Backend
from compbench.backends.torch import TorchSession
from compbench.cache.store import ArtifactStore
from compbench.common.cpu_features import native_precision_problem
from compbench.common.errors import UnsupportedError
from compbench.common.plugins import BACKENDS, COMPRESSORS
from compbench.common.progress import Reporter
from compbench.compressors.base import Stored
from compbench.compressors.chain import PipelineBuild
from compbench.config.backends import BackendOptions
from compbench.config.schema import StepConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, predict_logits
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource

HIDDEN, HEADS, FFN, LAYERS, RANK = 32, 2, 64, 2, 4
# Max |logit difference| / the logits' spread across rows. Measured: 0 for the exact methods, 0.1% for fp16,
# 1.5-5% for torch dynamic, ort-static and bnb INT8, 23% for ort-dynamic (u8s8 without VNNI saturates on
# AVX2-only CPUs: reduce_range avoids it); a model that lost its weights moves by well over 100%.
LOSSLESS, FP16, INT8 = 1e-4, 2e-2, 0.35

# Steps that are exact on the model above (or only round, for quantization), and their tolerance.
STEPS = {
    "prune-magnitude": ({"method": "magnitude", "amount": 0.25, "scope": "per_layer"}, "prune", LOSSLESS),
    "prune-heads": ({"method": "heads", "amount": 0.5, "importance": "weight"}, "prune", LOSSLESS),
    "prune-ffn": ({"method": "ffn", "amount": 0.25, "importance": "weight"}, "prune", LOSSLESS),
    "svd": ({"rank": RANK}, "svd", LOSSLESS),
    "distill-copy": ({"student": {"layers": list(range(LAYERS))}, "alpha": 0.5,
                      "train": {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-12}, "keep_best": False},
                     "distill", LOSSLESS),
    "dynamic": ({"method": "dynamic"}, "quantize", INT8),
    "ort-dynamic": ({"method": "ort-dynamic"}, "quantize", INT8),
    "ort-static": ({"method": "ort-static", "calibration_rows": 32}, "quantize", INT8),
    "bnb-int8": ({"method": "bnb-int8"}, "quantize", INT8),
    "fp16": ({"method": "fp16"}, "quantize", FP16),
    "ort-fp16": ({"method": "ort-fp16"}, "quantize", FP16),
}
# How each input format is made from the exact model (format -> step in STEPS; "hf" is the model itself).
MADE_BY = {"hf-sparse": "prune-magnitude", "hf-low-rank": "svd", "torch-int8-dynamic": "dynamic",
           "onnx": "ort-dynamic"}
FORMATS = ["hf", *MADE_BY]


def exact_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=512, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    head = HIDDEN // HEADS
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            linears = [layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                       layer.attention.output.dense, layer.intermediate.dense, layer.output.dense]
            for linear in linears:       # rank RANK, scaled so the logits depend on the sentence
                out, inp = linear.weight.shape
                linear.weight.copy_(torch.randn(out, RANK) @ torch.randn(RANK, inp) * (4.0 / inp))
            for linear in linears[:3]:   # the last head of every layer reads nothing ...
                linear.weight[head * (HEADS - 1):] = 0
                linear.bias[head * (HEADS - 1):] = 0
            layer.attention.output.dense.weight[:, head * (HEADS - 1):] = 0      # ... and writes nothing
            dead = slice(FFN * 3 // 4, FFN)                                        # a quarter of the FFN neurons
            layer.intermediate.dense.weight[dead] = 0
            layer.intermediate.dense.bias[dead] = -10.0       # GELU(-10) is 0: nothing flows through them
            layer.output.dense.weight[:, dead] = 0
        model.classifier.weight.mul_(100)
    return model


@pytest.fixture(scope="module")
def data(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=24,
                          seed=3)


@pytest.fixture(scope="module")
def builder(tmp_path_factory, tiny_artifact, data) -> PipelineBuild:
    store = ArtifactStore(tmp_path_factory.mktemp("formats"))
    teacher = store.build("exact", lambda folder: save_hf_artifact(folder, exact_model(), tiny_artifact.tokenizer(),
                                                                    task="sst2", lineage=[]))
    return PipelineBuild(teacher, data, store, seed=0, device="cpu", reporter=Reporter(enabled=False))


def step(name: str) -> StepConfig:
    params, compressor, _ = STEPS[name]
    return StepConfig(compressor=compressor, params=params)


@pytest.fixture(scope="module")
def inputs(builder) -> dict[str, ModelArtifact]:
    made = {"hf": builder.teacher}
    for fmt, name in MADE_BY.items():
        made[fmt] = builder.apply(builder.teacher, step(name), label=f"input {fmt}")
        assert made[fmt].format == fmt, (fmt, made[fmt].format)
    return made


def logits(artifact: ModelArtifact, data) -> np.ndarray:
    """Logits on the evaluation rows from PyTorch where it loads the model, else from ONNX Runtime."""
    torch_loads = artifact.format != "onnx"
    backend: Backend = BACKENDS.get("torch" if torch_loads else "onnxruntime")()
    if torch_loads and artifact.precision == "fp16" and native_precision_problem("fp16"):
        # the torch backend refuses to time emulated fp16 on this CPU; the numbers are still PyTorch's to check
        session = TorchSession(artifact.torch_model().eval(), torch.device("cpu"), 1, [])
    else:
        session = backend.load(artifact, BackendOptions(name=backend.name, threads=1))
    try:
        tokenizer = artifact.tokenizer()
        rows = encode_rows(tokenizer, data.task, next(iter(data.eval.values())), 32)
        return predict_logits(session.run, tokenizer, rows, 8)
    finally:
        session.close()


def test_the_exact_model_is_exact_under_the_lossless_methods(builder, inputs, data, tmp_path):
    reference = logits(builder.teacher, data)
    assert np.ptp(reference, axis=0).max() > 0.5, "the logits must depend on the sentence to tell models apart"
    for fmt in ("hf-sparse", "hf-low-rank"):
        assert np.abs(logits(inputs[fmt], data) - reference).max() < LOSSLESS * np.ptp(reference)
    # the control: the same architecture with its weights lost (initialised afresh) is far outside every tolerance
    torch.manual_seed(1)
    lost = save_hf_artifact(tmp_path, BertForSequenceClassification(builder.teacher.torch_model().config),
                            builder.teacher.tokenizer(), task="sst2", lineage=[])
    assert np.abs(logits(lost, data) - reference).max() > 1.0 * np.ptp(reference)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(STEPS))
def test_every_step_after_every_format_keeps_the_logits_or_is_refused(builder, inputs, data, name, fmt):
    source = inputs[fmt]
    compressor = COMPRESSORS.get(step(name).compressor)
    params = compressor.Params.model_validate(step(name).params)
    refusal = compressor.refusal(params, Stored(source.format, source.precision))
    if refusal:
        with pytest.raises(UnsupportedError, match="takes models stored as"):
            builder.apply(source, step(name), label=f"{name} after {fmt}")
        return
    out = builder.apply(source, step(name), label=f"{name} after {fmt}")
    expected = logits(source, data)
    difference = np.abs(logits(out, data) - expected).max() / np.ptp(expected)
    assert difference < STEPS[name][2], f"{name} after {fmt}: logits moved by {difference:.2%} of their spread"
    assert (out.format, out.precision) == (compressor.produces(params).format, compressor.produces(params).precision) \
        or (name == "svd" and out.format == "hf")


def test_a_refusal_is_a_suite_error_before_anything_is_built():
    from compbench.common.errors import UsageError
    from compbench.config.loading import validate_suite

    chain = [{"compressor": "svd", "params": {"ratio": 0.5}},
             {"compressor": "quantize", "params": {"method": "bnb-int8"}}]
    with pytest.raises(UsageError) as error:
        validate_suite({"name": "x", "tasks": ["sst2"], "pipelines": [{"name": "svd-bnb", "steps": chain}]}, "x.yaml")
    assert str(error.value) == ("x.yaml: pipelines[0].steps[1]: after svd, quantize (method bnb-int8) takes models "
                                "stored as hf at fp32; it would be given hf-low-rank (fp32)")
