"""quantize's NNCF methods (OpenVINO IR in, format ``openvino`` out), through the real pipeline build on real rows:
static INT8 of an encoder calibrated on SST-2 training rows, accuracy-controlled INT8 validated on held-out
training rows only, INT8 / INT4 weight compression of a causal LM (data-free, and AWQ + scale estimation on the
GLUE training text); what each stores (FakeQuantize nodes, int8 / int4 weight constants), that it loads and runs
in OpenVINO and follows fp32, its parameter counts, and the refusals (impossible chains, wrong model kind, bad
parameters, NNCF's own errors) as one line.

The encoder is the tiny random BERT made to depend on its sentence (conftest ``responsive``); the causal LM the
tiny random Llama. Bounds sit above what was measured here, noted beside them. The real MiniLM and SmolLM2 run in
the tests marked long.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError, UsageError
from compbench.common.hashing import stable_hash
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.compressors.chain import PipelineBuild, StepInputs, step_identity
from compbench.compressors.quantize import Quantize, QuantizeParams
from compbench.compressors.quantize import nncf as nncf_methods
from compbench.config.backends import BackendOptions
from compbench.config.loading import validate_suite
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.openvino import OPENVINO_XML, ir_parameter_counts, read_ir, weight_precisions
from compbench.models.openvino_export import openvino_ir
from compbench.tasks.data import TaskData, load_task_data
from compbench.tasks.encoding import encode_rows, predict_logits
from compbench.tasks.glue import TaskSpec, get_task
from compbench.tasks.language_modeling import glue_corpus
from compbench.tasks.sources import ParquetFolderSource

openvino = pytest.importorskip("openvino", reason="openvino is not installed (scripts/setup.sh installs it)")
pytest.importorskip("nncf", reason="nncf is not installed (scripts/setup.sh installs it)")

LM_TASK = TaskSpec("glue-text", ("text",), 0, ("perplexity",), ("validation",), kind="language_modeling")


class EvaluationSplitRead(AssertionError):
    pass


class Untouchable(dict):
    """An evaluation split that fails the test if any code looks at it."""

    def _refuse(self, *args, **kwargs):
        raise EvaluationSplitRead("the evaluation split was read")

    __getitem__ = __iter__ = __len__ = __contains__ = keys = values = items = get = _refuse


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=128,
                          seed=1)


@pytest.fixture(scope="module")
def sst2_train_only(glue_data):
    """120 SST-2 training rows; the evaluation split refuses to be read."""
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=120, limit_eval=8,
                          seed=1)
    return TaskData(data.task, data.train, Untouchable(), data.source, data.fingerprint)


@pytest.fixture(scope="module")
def builder(responsive, sst2, tmp_path_factory) -> PipelineBuild:
    return PipelineBuild(responsive, sst2, ArtifactStore(tmp_path_factory.mktemp("nncf")), seed=0, device="cpu",
                         reporter=Reporter(enabled=False))


def quantize(builder: PipelineBuild, **params) -> ModelArtifact:
    artifact = builder.run(PipelineConfig(name="q", steps=[StepConfig(compressor="quantize", params=params)]))
    assert artifact.lineage[-1]["step"] == "quantize" and artifact.lineage[-1]["params"]["method"] == params["method"]
    return artifact


def ir_of(artifact: ModelArtifact):
    return read_ir(artifact.path / OPENVINO_XML)


def op_types(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def int8_weight_matmuls(model) -> dict[str, str]:
    """For each MatMul whose weight is an int8 constant (de-quantized on the way: Convert, Multiply): the op type
    feeding its other input."""
    found = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Multiply", "Convert", "Subtract", "Reshape", "Transpose"):
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant" and node.get_element_type().get_type_name() == "i8":
            found[op.get_friendly_name()] = op.input_value(0).get_node().get_type_name()
    return found


def openvino_logits(xml, tokenizer, task, rows) -> np.ndarray:
    """Logits of the IR in ``xml``, compiled with nothing but ``Core().compile_model(xml, "CPU")``."""
    compiled = openvino.Core().compile_model(str(xml), "CPU")
    names = [port.get_any_name() for port in compiled.inputs]
    return predict_logits(lambda batch: compiled({name: batch[name] for name in names})[0], tokenizer,
                          encode_rows(tokenizer, task, rows, 128), 32)


@pytest.fixture(scope="module")
def fp32_logits(responsive, sst2) -> np.ndarray:
    tokenizer = responsive.tokenizer()
    logits = openvino_logits(openvino_ir(responsive) / OPENVINO_XML, tokenizer, sst2.task, sst2.eval["validation"])
    assert 10 < np.bincount(logits.argmax(axis=1), minlength=2).min(), "the reference model must predict both classes"
    return logits


def follows(logits: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """(largest logit error relative to the spread of fp32's margins, correlation of the margins, share of rows
    predicting fp32's class)."""
    margin, reference_margin = logits[:, 1] - logits[:, 0], reference[:, 1] - reference[:, 0]
    return (float(np.abs(logits - reference).max() / reference_margin.std()),
            float(np.corrcoef(margin, reference_margin)[0, 1]),
            float((logits.argmax(axis=1) == reference.argmax(axis=1)).mean()))


# ---------------------------------------------------------------- static INT8 (encoders)


def test_nncf_int8_writes_fake_quantize_and_int8_weights_and_follows_fp32(builder, responsive, sst2, fp32_logits):
    artifact = quantize(builder, method="nncf-int8")
    assert (artifact.format, artifact.precision) == ("openvino", "int8-static")
    assert artifact.kind == "sequence-classification"
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"} <= set(artifact.files)
    assert [path.name for path in artifact.deployed_files()] == ["openvino_model.xml", "openvino_model.bin",
                                                                 "config.json"]
    model = ir_of(artifact)
    linears = int8_weight_matmuls(model)
    assert len(linears) == 2 * 6 + 2                  # 6 Linears a layer, the pooler, the classifier
    assert all(activation == "FakeQuantize" for activation in linears.values()), linears
    # every weight in int8, the embedding tables too (NNCF's transformer pipeline)
    assert weight_precisions(model) == {"int8": ir_parameter_counts(read_ir(openvino_ir(responsive) / OPENVINO_XML))[0]}
    # calibration: the seeded training rows ort-static also samples (all 64 here), recorded with their digest
    expected = sst2.train.sample(n=64, random_state=0)
    assert artifact.lineage[-1]["calibration"] == {"split": "train", "rows": 64, "seed": 0,
                                                   "rows_digest": stable_hash(expected.to_dict("list"))}
    logits = openvino_logits(artifact.path / OPENVINO_XML, artifact.tokenizer(), sst2.task, sst2.eval["validation"])
    rel, corr, agree = follows(logits, fp32_logits)
    # measured (1.04, 0.968, 0.836): NNCF quantizes every activation of this model, whose attention output is
    # scaled x8 (ort-static, MatMul and Gather only: 0.26, 0.993, 0.977); the real MiniLM: corr 0.989, agreement 0.94
    assert rel < 1.5 and corr > 0.95 and agree >= 0.78, (rel, corr, agree)
    assert artifact.size_bytes() < 0.4 * responsive.size_bytes()             # measured 0.32


def test_the_openvino_backend_runs_the_int8_model(builder, sst2):
    artifact = quantize(builder, method="nncf-int8")
    session = BACKENDS.get("openvino")().load(artifact, BackendOptions(name="openvino", threads=1))
    try:
        tokenizer = artifact.tokenizer()
        logits = predict_logits(session.run, tokenizer, encode_rows(tokenizer, sst2.task, sst2.eval["validation"],
                                                                    128), 32)
        assert session.runtime_info()["precision"] == "int8-static"
    finally:
        session.close()
    reference = openvino_logits(artifact.path / OPENVINO_XML, artifact.tokenizer(), sst2.task, sst2.eval["validation"])
    assert np.abs(logits - reference).max() < 1e-4        # the backend runs the IR as written


@pytest.fixture(scope="module")
def trained_like(tiny_artifact, tmp_path_factory) -> ModelArtifact:
    """The tiny BERT with every bias and LayerNorm parameter moved off its initial zeros and ones, as training
    leaves them: nothing for a converter to fold away, so its IR must count exactly what PyTorch counts."""
    import torch

    model = tiny_artifact.torch_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    store = ArtifactStore(tmp_path_factory.mktemp("trained-like"))
    return store.build("trained-like", lambda folder: save_hf_artifact(folder, model, tiny_artifact.tokenizer(),
                                                                       task="sst2", lineage=[]))


@pytest.mark.parametrize("params", [{"method": "nncf-int8"}, {"method": "nncf-int8-wo"},
                                    {"method": "nncf-int4", "group_size": 32}])
def test_a_quantized_model_keeps_its_sources_parameter_count(trained_like, sst2, tmp_path, params):
    """Counted from the IR: int8 and packed int4 weights count each element, scales, zero points, FakeQuantize
    ranges and SmoothQuant's scales count nothing; equal to PyTorch's sum of numel."""
    import torch

    source = trained_like.torch_model()
    total = sum(parameter.numel() for parameter in source.parameters())
    assert trained_like.parameter_counts()[0] == total
    assert ir_parameter_counts(read_ir(openvino_ir(trained_like) / OPENVINO_XML))[0] == total
    build = PipelineBuild(trained_like, sst2, ArtifactStore(tmp_path), seed=0, device="cpu",
                          reporter=Reporter(enabled=False))
    artifact = quantize(build, **params)
    parameters, nonzero = artifact.parameter_counts()
    assert parameters == total
    # real zeros only: fp32's (the padding token's embedding row) stay zeros (zero is exact in every scheme here),
    # and small weights the quantizer rounds to zero join them
    before = sum(int(torch.count_nonzero(p)) for p in source.parameters())
    assert before == total - 32 and 0.9 * before < nonzero <= before


def test_nncf_int8_refuses_a_causal_lm_in_one_line(tiny_causal_lm, tmp_path):
    ctx = CompressContext(data=None, teacher=tiny_causal_lm, seed=0, device="cpu", work_dir=tmp_path,
                          reporter=Reporter(enabled=False))
    for method in ("nncf-int8", "nncf-int8-accuracy"):
        with pytest.raises(UnsupportedError, match="for a causal LM use nncf-int8-wo or nncf-int4") as info:
            Quantize(QuantizeParams(method=method)).compress(tiny_causal_lm, ctx)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- accuracy control


def test_accuracy_control_validates_on_held_out_training_rows_only(responsive, sst2_train_only, tmp_path):
    """The evaluation split refuses to be read; the drop is measured on a seeded half of the training rows,
    disjoint from the calibration rows; the fp32 metric NNCF reports is the task's on exactly those rows; INT8
    lost accuracy there, so NNCF reverted operations to float until it was back, and the lineage names them."""
    train = sst2_train_only.train
    build = PipelineBuild(responsive, sst2_train_only, ArtifactStore(tmp_path), seed=0, device="cpu",
                          reporter=Reporter(enabled=False))
    artifact = quantize(build, method="nncf-int8-accuracy", max_drop=0.0)
    assert (artifact.format, artifact.precision) == ("openvino", "int8-mixed")
    record = artifact.lineage[-1]
    held, calibrated = nncf_methods.held_out_split(train, 300, 300, 0)
    assert len(held) == 60 and len(calibrated) == 60 and not set(held.index) & set(calibrated.index)
    assert set(held.index) | set(calibrated.index) == set(train.index)
    assert record["validation"] == {"split": "train (held out)", "rows": 60, "seed": 0,
                                    "rows_digest": stable_hash(held.to_dict("list"))}
    assert record["calibration"]["rows_digest"] == stable_hash(calibrated.to_dict("list"))
    report = record["accuracy_control"]
    assert report["metric"] == "accuracy" and report["rows"] == 60
    compiled = openvino.Core().compile_model(str(openvino_ir(responsive) / OPENVINO_XML), "CPU")
    tokenizer = responsive.tokenizer()
    encoded = encode_rows(tokenizer, sst2_train_only.task, held, 128)
    logits = predict_logits(lambda batch: compiled(batch)[0], tokenizer, encoded, 32)
    assert report["fp32"] == pytest.approx((logits.argmax(axis=1) == encoded.labels).mean(), abs=1e-6)
    # measured: 0.45 (fp32) -> 0.433 (int8) -> 0.483 with layer 0's query, key and value MatMuls in float
    assert report["quantized"] < report["fp32"]
    assert 0 < len(report["reverted_to_float"]) < report["quantized_operations"]
    assert all(name.endswith("MatMul") for name in report["reverted_to_float"])
    assert report["reached"] and report["result"] >= report["fp32"]
    # the reverted operations run in float: their weights are fp32 constants again
    assert weight_precisions(ir_of(artifact))["float"] > 0


def test_the_task_metric_decides_not_accuracy(responsive, sst2, tmp_path):
    """A task whose headline metric is F1 is validated on F1 of the held-out rows."""
    f1_task = TaskSpec("sst2-f1", sst2.task.text_fields, 2, ("f1", "accuracy"), sst2.task.eval_splits)
    data = TaskData(f1_task, sst2.train, Untouchable(), sst2.source, sst2.fingerprint + "f1")
    build = PipelineBuild(responsive, data, ArtifactStore(tmp_path), seed=0, device="cpu",
                          reporter=Reporter(enabled=False))
    report = quantize(build, method="nncf-int8-accuracy", max_drop=0.5).lineage[-1]["accuracy_control"]
    assert report["metric"] == "f1" and report["reverted_to_float"] == [] and report["reached"] is True


def test_the_report_reads_what_nncf_logged():
    """NNCF says which operations it reverted only in its log: its messages, as 3.4 writes them."""
    messages = [
        "Validation of initial model was started", "Metric of initial model: 0.8125",
        "Metric of quantized model: 0.75", "Accuracy drop: 0.0625 (absolute)",
        "Total number of quantized operations in the model: 38",
        "Reverted 2 operations to the floating-point precision: \n\t/bert/MatMul_1\n\t/bert/MatMul_2",
        "Accuracy drop with the new quantization scope is 0.03125 (absolute)",
        "Reverted 1 operations to the floating-point precision: \n\t/classifier/MatMul",
        "Algorithm completed: achieved required accuracy drop 0.0 (absolute)",
        "3 out of 38 were reverted back to the floating-point precision:\n\t/bert/MatMul_1\n\t/bert/MatMul_2\n"
        "\t/classifier/MatMul"]
    report = nncf_methods.accuracy_control_report(messages)
    assert report == {"fp32": 0.8125, "quantized": 0.75, "quantized_operations": 38, "all_reverted": False,
                      "reverted_to_float": ["/bert/MatMul_1", "/bert/MatMul_2", "/classifier/MatMul"]}
    every = nncf_methods.accuracy_control_report(messages[:6] + [
        "All layers have been checked and the AccuracyAwareQuantization will not be able to achieve the required "
        "accuracy drop"])
    assert every["all_reverted"] and every["reverted_to_float"] == ["/bert/MatMul_1", "/bert/MatMul_2"]


def test_row_scores_follow_the_task_kind():
    binary = TaskSpec("b", ("s",), 2, ("accuracy",), ("validation",))
    assert nncf_methods.row_scores(binary, np.array([1, 0, 1]), np.array([1, 1, 1])).tolist() == [1.0, 0.0, 1.0]
    regression = TaskSpec("r", ("s",), 1, ("pearson",), ("validation",))
    assert nncf_methods.row_scores(regression, np.array([0.5, 2.0]), np.array([1.0, 2.0])).tolist() == [-0.5, 0.0]
    multi = TaskSpec("m", ("s",), 3, ("micro_f1",), ("validation",), kind="multi_label")
    scores = nncf_methods.row_scores(multi, np.array([[1, 0, 1], [0, 0, 0]]), np.array([[1, 0, 0], [0, 0, 0]]))
    assert scores.tolist() == pytest.approx([2 / 3, 1.0])
    ranked = TaskSpec("a", ("s",), 2, ("auroc",), ("validation",))     # log-probabilities: the probability's error
    log_probs = np.log(np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert nncf_methods.row_scores(ranked, log_probs, np.array([1, 1])).tolist() == pytest.approx([-0.2, -0.9])


# ---------------------------------------------------------------- weight compression (causal LMs)


@pytest.fixture(scope="module")
def lm_data(glue_data) -> TaskData:
    """The GLUE training text (RTE + MRPC); the evaluation split refuses to be read."""
    train = glue_corpus(glue_data, split="train", limit=40)
    return TaskData(LM_TASK, pd.DataFrame({"text": list(train.documents)}), Untouchable(), source=train.source,
                    fingerprint=train.fingerprint)


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("nncf-lm"))


def compressed(store: ArtifactStore, model: ModelArtifact, data: TaskData | None, **params) -> ModelArtifact:
    """One step built into a sealed store entry, as a pipeline does."""
    settings = QuantizeParams(**params)

    def build(folder):
        ctx = CompressContext(data=data, teacher=model, seed=0, device="cpu", work_dir=folder,
                              reporter=Reporter(enabled=False), max_seq_len=32)
        return Quantize(settings).compress(model, ctx)
    return store.build(stable_hash([model.hash, settings.model_dump()]), build)


@pytest.fixture(scope="module")
def lm_batch() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(1000, 29000, size=(1, 24), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(24)[None],
            "beam_idx": np.zeros(1, dtype=np.int32)}


def decoder_logits(xml, batch) -> np.ndarray:
    request = openvino.Core().compile_model(str(xml), "CPU").create_infer_request()
    request.reset_state()
    return np.asarray(request.infer(batch)["logits"])


def test_nncf_int4_stores_int4_weights_and_still_runs(tiny_causal_lm, lm_store, lm_batch):
    artifact = compressed(lm_store, tiny_causal_lm, None, method="nncf-int4")
    assert (artifact.format, artifact.precision, artifact.kind) == ("openvino", "int4-weight-only", "causal-lm")
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "generation_config.json"} <= set(artifact.files)
    model = ir_of(artifact)
    types = {op.get_element_type().get_type_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Constant"}
    assert "u4" in types                                   # int4_asym: unsigned 4-bit values and zero points
    stored = weight_precisions(model)
    # every decoder Linear in 4 bits; the embedding table (tied: also the lm_head) in int8, NNCF's default
    decoder_linears = 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128)
    assert stored == {"int4": decoder_linears, "int8": 30522 * 64}
    fp32_xml = openvino_ir(tiny_causal_lm) / OPENVINO_XML
    # the IR of a fresh model folds its norm weights of ones away; the quantized model has its source's parameters
    assert ir_parameter_counts(model)[0] == ir_parameter_counts(read_ir(fp32_xml))[0]
    assert artifact.parameter_counts() == tiny_causal_lm.parameter_counts()
    reference = decoder_logits(fp32_xml, lm_batch)
    error = np.abs(decoder_logits(artifact.path / OPENVINO_XML, lm_batch) - reference).max() / np.abs(reference).max()
    assert error < 0.2, error                                                     # measured 0.06
    assert artifact.size_bytes() < 0.3 * tiny_causal_lm.size_bytes()              # measured 0.26


def test_an_int4_decoder_loads_in_optimum_intel_and_generates(tiny_causal_lm, lm_store):
    from optimum.intel import OVModelForCausalLM

    artifact = compressed(lm_store, tiny_causal_lm, None, method="nncf-int4")
    model = OVModelForCausalLM.from_pretrained(artifact.path, compile=True, device="CPU")
    assert model.stateful
    tokenizer = artifact.tokenizer()
    inputs = tokenizer(["the film is"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_nncf_int8_weight_only_puts_every_weight_in_8_bits(tiny_causal_lm, lm_store, lm_batch):
    artifact = compressed(lm_store, tiny_causal_lm, None, method="nncf-int8-wo")
    assert artifact.precision == "int8-weight-only"
    stored = weight_precisions(ir_of(artifact))
    assert set(stored) == {"int8"}      # the norms' weights were ones: folded away by the exporter
    fp32_xml = openvino_ir(tiny_causal_lm) / OPENVINO_XML
    reference = decoder_logits(fp32_xml, lm_batch)
    error = np.abs(decoder_logits(artifact.path / OPENVINO_XML, lm_batch) - reference).max() / np.abs(reference).max()
    assert error < 0.02, error                                                    # measured 0.004


def test_data_aware_int4_reads_the_training_text_only(tiny_causal_lm, lm_store, lm_data, lm_batch):
    """AWQ and scale estimation calibrate on seeded chunks of the training documents (the evaluation split refuses
    to be read), recorded in the lineage."""
    artifact = compressed(lm_store, tiny_causal_lm, lm_data, method="nncf-int4", awq=True, scale_estimation=True,
                          calibration_rows=8)
    calibration = artifact.lineage[-1]["calibration"]
    assert calibration["split"] == "train" and calibration["chunks"] == 8 and calibration["tokens"] == 8 * 32
    data_free = compressed(lm_store, tiny_causal_lm, None, method="nncf-int4")
    assert weight_precisions(ir_of(artifact)) == weight_precisions(ir_of(data_free))
    assert (artifact.path / "openvino_model.bin").read_bytes() != (data_free.path / "openvino_model.bin").read_bytes()


def test_a_group_size_that_does_not_divide_a_layer_is_one_line(tiny_causal_lm, lm_store):
    with pytest.raises(UnsupportedError, match=r"NNCF [\d.]+ compress_weights: InvalidGroupSizeError: .*"
                                               r"\(group_size must divide") as info:
        compressed(lm_store, tiny_causal_lm, None, method="nncf-int4", group_size=128)    # the layers are 64 wide
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- plan, parameters, cache keys


@pytest.mark.parametrize("first, second, fragment", [
    ("nncf-int8", "ort-static", "quantize (method ort-static) takes models stored as hf or hf-sparse or hf-low-rank "
                                "at fp32; it would be given openvino (int8-static)"),
    ("dynamic", "nncf-int8", "quantize (method nncf-int8) takes models stored as hf or hf-sparse or hf-low-rank at "
                             "fp32; it would be given torch-int8-dynamic (int8-dynamic)"),
    ("nncf-int8-wo", "nncf-int4", "it would be given openvino (int8-weight-only)"),
])
def test_a_chain_the_method_cannot_take_is_refused_in_one_line(first, second, fragment):
    raw = {"name": "x", "tasks": ["sst2"],
           "pipelines": [{"name": "q", "steps": [{"compressor": "quantize", "params": {"method": first}},
                                                 {"compressor": "quantize", "params": {"method": second}}]}]}
    with pytest.raises(UsageError) as info:
        validate_suite(raw, "suite.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("suite.yaml: pipelines[0].steps[1]: after quantize, ")
    assert fragment in message


@pytest.mark.parametrize("first", [{"compressor": "svd", "params": {"ratio": 0.5}},
                                   {"compressor": "prune", "params": {"method": "magnitude", "amount": 0.3}}],
                         ids=["svd", "magnitude"])
def test_nncf_takes_factorised_and_sparse_models(builder, sst2, first):
    """After svd (hf-low-rank) or magnitude pruning (hf-sparse) the IR is converted from the model's ONNX export;
    8-bit weights follow the input model's logits."""
    then = StepConfig(compressor="quantize", params={"method": "nncf-int8-wo"})
    pipeline = PipelineConfig(name="chain", steps=[StepConfig(**first), then])
    artifact = builder.run(pipeline)
    source = builder.run(PipelineConfig(name="first", steps=[StepConfig(**first)]))
    assert source.format in ("hf-low-rank", "hf-sparse") and artifact.format == "openvino"
    assert artifact.lineage[-1]["input_hash"] == source.hash
    tokenizer, rows = source.tokenizer(), sst2.eval["validation"]
    reference = openvino_logits(openvino_ir(source) / OPENVINO_XML, tokenizer, sst2.task, rows)
    logits = openvino_logits(artifact.path / OPENVINO_XML, tokenizer, sst2.task, rows)
    rel, corr, agree = follows(logits, reference)
    assert corr > 0.99 and agree > 0.95, (rel, corr, agree)


@pytest.mark.parametrize("params, fragment", [
    ({"method": "nncf-int8", "max_drop": 0.02}, "method 'nncf-int8' does not use max_drop; it reads: "
                                                "calibration_rows, preset, smooth_quant_alpha"),
    ({"method": "nncf-int8-wo", "group_size": 32}, "method 'nncf-int8-wo' does not use group_size; it reads: mode"),
    ({"method": "nncf-int8-wo", "mode": "int4_sym"}, "method 'nncf-int8-wo' takes mode int8_asym or int8_sym"),
    ({"method": "nncf-int4", "mode": "int8_asym"}, "method 'nncf-int4' takes mode int4_asym or int4_sym"),
    ({"method": "nncf-int4", "calibration_rows": 16}, "nncf-int4 reads calibration_rows only with awq"),
    ({"method": "nncf-int4", "ratio": 0}, "greater than 0"),
    ({"method": "nncf-int4", "ratio": 1.5}, "less than or equal to 1"),
    ({"method": "nncf-int4", "group_size": 48}, "32, 64 or 128"),
    ({"method": "nncf-int8-accuracy", "drop_type": "percent"}, "'absolute' or 'relative'"),
    ({"method": "nncf-int8-accuracy", "max_drop": -0.1}, "greater than or equal to 0"),
    ({"method": "nncf-int8", "smooth_quant_alpha": 1.5}, "less than or equal to 1"),
    ({"method": "ort-static", "awq": True}, "method 'ort-static' does not use awq"),
])
def test_bad_params_are_one_line(params, fragment):
    raw = {"name": "x", "tasks": ["sst2"],
           "pipelines": [{"name": "q", "steps": [{"compressor": "quantize", "params": params}]}]}
    with pytest.raises(UsageError) as info:
        validate_suite(raw, "suite.yaml")
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)
    with pytest.raises(ValidationError):
        QuantizeParams.model_validate(params)


def test_defaults_are_the_methods_own_and_validate_again():
    defaults = {"nncf-int8": {"calibration_rows": 300, "preset": "mixed", "smooth_quant_alpha": 0.95},
                "nncf-int8-accuracy": {"calibration_rows": 300, "max_drop": 0.01, "drop_type": "absolute",
                                       "validation_rows": 300},
                "nncf-int8-wo": {"mode": "int8_asym"},
                "nncf-int4": {"mode": "int4_asym", "group_size": 64, "ratio": 1.0, "calibration_rows": 128,
                              "all_layers": False, "awq": False, "scale_estimation": False, "gptq": False}}
    for method, expected in defaults.items():
        dumped = QuantizeParams(method=method).model_dump()
        assert {name: dumped[name] for name in expected} == expected
        assert QuantizeParams.model_validate(dumped).model_dump() == dumped
    assert QuantizeParams(method="ort-static").calibration_rows == 256      # the other methods' default stays


# stable_hash of each method's default parameters as dumped before the NNCF methods existed
DUMPS_BEFORE = {"dynamic": "c7b07e590a911559", "ort-dynamic": "ce26e8838acc10fa", "ort-int4": "6896485081bdba9d",
                "ort-static": "3bdf17d195cbfd13", "bnb-int8": "e0559f8a8f51b267", "bnb-nf4": "10c9830d8924ce51",
                "torchao-int8-weight-only": "0f5c772520769a94", "torchao-int8-dynamic": "8dc809155d1fb54f",
                "torchao-int4-weight-only": "c4879ff89b96211d", "fp16": "dd4790beeee7b8f2",
                "ort-fp16": "323be6fe9a026ebd"}


def test_the_other_methods_keys_are_unchanged():
    """The NNCF parameters stay out of the other methods' dumps, so their cache keys are what they were."""
    for method, digest in DUMPS_BEFORE.items():
        dumped = QuantizeParams(method=method).model_dump()
        assert not {"preset", "smooth_quant_alpha", "max_drop", "mode", "ratio", "awq"} & set(dumped)
        assert stable_hash(dumped) == digest, method
        assert Quantize.key_material(QuantizeParams(method=method), None) == {}
    changed = QuantizeParams(method="ort-static", calibration_rows=100, per_channel=True).model_dump()
    assert stable_hash(changed) == "47c664ca285347ef"


def test_the_step_key_covers_openvino_and_nncf_versions(monkeypatch):
    inputs = StepInputs("data", 0, base_dir=None)
    step = StepConfig(compressor="quantize", params={"method": "nncf-int4"})
    key, _ = step_identity("input", step, inputs)
    material = Quantize.key_material(QuantizeParams(method="nncf-int4"), None)
    assert set(material["nncf_libraries"]) == {"openvino", "nncf", "optimum-intel"}
    versions = dict(material["nncf_libraries"], nncf="0.0")
    monkeypatch.setattr(nncf_methods, "package_versions", lambda names: versions)
    assert step_identity("input", step, inputs)[0] != key
    other = StepConfig(compressor="quantize", params={"method": "ort-int4"})
    monkeypatch.undo()
    before = step_identity("input", other, inputs)[0]
    monkeypatch.setattr(nncf_methods, "package_versions", lambda names: versions)
    assert step_identity("input", other, inputs)[0] == before


# ---------------------------------------------------------------- the real models (long)


@pytest.fixture(scope="module")
def minilm_sst2(minilm_path, glue_data, tmp_path_factory) -> tuple[ModelArtifact, TaskData]:
    """The packaged MiniLM encoder with an SST-2 classifier: a logistic regression fitted on its pooled output of
    1,000 training rows (a linear probe: the encoder is as packaged), and SST-2 with its whole validation split."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertForSequenceClassification

    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=1000, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    with torch.no_grad():   # zeros in the checkpoint: a converter would fold them away
        model.bert.pooler.dense.bias.copy_(0.02 * torch.randn(384, generator=torch.Generator().manual_seed(0)))
    rows = encode_rows(tokenizer, data.task, data.train, 128)
    features = []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            batch = tokenizer.pad(rows.features[start:start + 64], return_tensors="pt")
            features.append(model.bert(**batch).pooler_output)
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(torch.cat(features).numpy(), rows.labels)
    weight, bias = torch.tensor(probe.coef_[0], dtype=torch.float32), float(probe.intercept_[0])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-weight / 2, weight / 2]))
        model.classifier.bias.copy_(torch.tensor([-bias / 2, bias / 2]))
    store = ArtifactStore(tmp_path_factory.mktemp("minilm"))
    return store.build("minilm-probe", lambda folder: save_hf_artifact(folder, model, tokenizer, task="sst2",
                                                                       lineage=[])), data


@pytest.mark.long
def test_nncf_int8_on_the_real_minilm(minilm_sst2, tmp_path):
    """INT8 of a real SST-2 classifier (weak: a linear probe) keeps PyTorch's count of its parameters and its
    accuracy on all 872 SST-2 validation rows within two points of fp32 (both in OpenVINO)."""
    source, data = minilm_sst2
    total = sum(parameter.numel() for parameter in source.torch_model().parameters())
    build = PipelineBuild(source, data, ArtifactStore(tmp_path), seed=0, device="cpu", reporter=Reporter(enabled=False))
    artifact = quantize(build, method="nncf-int8")
    assert artifact.parameter_counts()[0] == total == 22_713_986
    tokenizer, rows = source.tokenizer(), data.eval["validation"]
    reference = openvino_logits(openvino_ir(source) / OPENVINO_XML, tokenizer, data.task, rows)
    logits = openvino_logits(artifact.path / OPENVINO_XML, tokenizer, data.task, rows)
    labels = rows["label"].to_numpy()
    accuracy = {"fp32": float((reference.argmax(axis=1) == labels).mean()),
                "int8": float((logits.argmax(axis=1) == labels).mean())}
    rel, corr, agree = follows(logits, reference)
    print(json.dumps({"rows": len(rows), **accuracy, "rel": rel, "corr": corr, "agree": agree,
                      "bytes": artifact.size_bytes(), "fp32_bytes": source.size_bytes()}))
    # measured: accuracy 0.638 (fp32) and 0.644 (int8), margins' correlation 0.994, same class on 93.3% of rows
    assert accuracy["fp32"] > 0.6
    assert accuracy["int8"] > accuracy["fp32"] - 0.02 and corr > 0.98 and agree > 0.9
    assert artifact.size_bytes() < 0.3 * source.size_bytes()


@pytest.mark.long
def test_nncf_int4_on_smollm2(smollm2_folder, glue_data, tmp_path):
    """SmolLM2-135M: int4 (group 64: 128 does not divide its 576-wide layers) keeps its parameter count, stores its
    decoder in 4 bits and its tied embedding table in int8, and keeps perplexity on GLUE text near fp32's (both
    through the openvino backend)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compbench.tasks.language_modeling import perplexity

    source = ArtifactStore(tmp_path).build("smollm2", lambda folder: save_hf_artifact(
        folder, AutoModelForCausalLM.from_pretrained(smollm2_folder), AutoTokenizer.from_pretrained(smollm2_folder),
        task="glue-text", lineage=[]))
    artifact = compressed(ArtifactStore(tmp_path / "q"), source, None, method="nncf-int4")
    total = source.parameter_counts()[0]
    assert artifact.parameter_counts()[0] == total
    stored = weight_precisions(ir_of(artifact))
    assert stored["int8"] == 49152 * 576 and stored["int4"] == 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 576 * 1536)
    texts = list(glue_corpus(glue_data, split="validation", limit=20).documents)
    tokenizer = artifact.tokenizer()
    scores = {}
    for name, model in (("fp32", source), ("int4", artifact)):
        session = BACKENDS.get("openvino")().load(model, BackendOptions(name="openvino", threads=2))
        try:
            scores[name] = perplexity(session.language_model(), tokenizer, texts, max_length=256).perplexity
        finally:
            session.close()
    print(json.dumps({**scores, "bytes": artifact.size_bytes(), "fp32_bytes": source.size_bytes()}))
    assert scores["int4"] < 1.5 * scores["fp32"], scores
