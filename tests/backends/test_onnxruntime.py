"""ONNX export and the ONNX Runtime backend, on the tiny random BERT with real SST-2 rows.

The tiny model's logits are ~0.02 and move only ~3e-5 from one sentence to the next, so a
1e-4 tolerance would accept logits from the wrong row; parity is asserted at 1e-6 (measured:
under 1e-8), and each parity test first checks that its rows really differ by more than that.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from pydantic import ValidationError

from compbench.backends.onnxruntime import OrtOptions, session_options
from compbench.common.errors import UnsupportedError, UsageError
from compbench.common.plugins import BACKENDS
from compbench.config.backends import BackendOptions
from compbench.config.loading import validate_suite
from compbench.measurement.cell import size_of
from compbench.models.artifact import META_FILE, ModelArtifact
from compbench.models.formats.base import FORMATS, onnx_export_dir
from compbench.models.onnx_export import ONNX_FILE, _export_with_torch
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import timing_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource

PARITY = 1e-6
SHAPES = [(1, 8), (3, 24), (8, 64), (16, 128)]   # (batch, sequence length); the export traced neither
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=64,
                          seed=2)


def copy_without_onnx(artifact: ModelArtifact, folder) -> ModelArtifact:
    """A copy of ``artifact`` with no ONNX export yet (the session-wide tiny artifact may have one)."""
    shutil.copytree(artifact.path, folder, ignore=shutil.ignore_patterns("onnx", ".onnx-*"))
    return ModelArtifact.load(folder)


@pytest.fixture(scope="module")
def fresh(tiny_artifact, tmp_path_factory):
    return copy_without_onnx(tiny_artifact, tmp_path_factory.mktemp("fresh") / "tiny")


@pytest.fixture(scope="module")
def ort_session(fresh):
    session = BACKENDS.get("onnxruntime")().load(fresh, BackendOptions(name="onnxruntime", threads=1))
    yield session
    session.close()


@pytest.fixture(scope="module")
def torch_model(fresh):
    return fresh.torch_model().eval()


def torch_logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()


def batches(artifact, data):
    rows = data.eval["validation"]
    return [timing_batch(artifact.tokenizer(), data.task, rows, size, length, seed=size) for size, length in SHAPES]


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def assert_discriminating(reference: np.ndarray) -> None:
    """The rows' own logits differ by far more than PARITY, so matching within it means something."""
    assert np.ptp(reference, axis=0).max() > 10 * PARITY


# ---------------------------------------------------------------- export


def test_hf_artifact_exports_once_with_dynamic_axes(tiny_artifact, tmp_path):
    fresh = copy_without_onnx(tiny_artifact, tmp_path / "tiny")
    assert not (fresh.path / "onnx").exists()
    files = fresh.onnx_files()
    model_file = onnx_export_dir(fresh.path) / ONNX_FILE
    assert files == [model_file]
    assert (model_file.parent / "exporter.txt").read_text().strip() == "optimum"
    assert not list(fresh.path.rglob(".*-*")), "the temporary export folder was left behind"
    mtime = model_file.stat().st_mtime_ns
    assert fresh.onnx_files() == files
    assert model_file.stat().st_mtime_ns == mtime
    graph = onnx.load(str(model_file)).graph
    assert {i.name: dims(i) for i in graph.input} == {name: ["batch_size", "sequence_length"] for name in INPUTS}
    assert [(o.name, dims(o)) for o in graph.output] == [("logits", ["batch_size", 2])]


def test_torch_onnx_fallback_matches_pytorch(fresh, torch_model, sst2, tmp_path):
    _export_with_torch(fresh.path, tmp_path)
    graph = onnx.load(str(tmp_path / ONNX_FILE)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(isinstance(d, str) for i in graph.input for d in dims(i)), [dims(i) for i in graph.input]
    assert dims(graph.output[0])[0] == "batch_size"
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch in batches(fresh, sst2):
        reference = torch_logits(torch_model, batch)
        got = session.run(None, batch)[0]
        assert got.shape == reference.shape
        np.testing.assert_allclose(got, reference, rtol=0, atol=PARITY)
    assert_discriminating(reference)


def test_torch_onnx_fallback_without_segment_embeddings(fresh, sst2, tmp_path):
    """DistilBERT has no ``type_vocab_size`` and takes no token_type_ids; the fallback must still export it."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                                                 hidden_dim=64, num_labels=2)).eval()
    model.save_pretrained(tmp_path / "distilbert")
    _export_with_torch(tmp_path / "distilbert", tmp_path)
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    batch = {k: v for k, v in batches(fresh, sst2)[2].items() if k != "token_type_ids"}
    np.testing.assert_allclose(session.run(None, batch)[0], torch_logits(model, batch), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- sessions


def test_session_matches_pytorch_at_every_shape(ort_session, fresh, torch_model, sst2):
    for batch in batches(fresh, sst2):
        assert all(v.shape == batch["input_ids"].shape for v in batch.values())
        reference = torch_logits(torch_model, batch)
        got = ort_session.run(batch)
        assert got.dtype == np.float32 and got.shape == reference.shape
        np.testing.assert_allclose(got, reference, rtol=0, atol=PARITY)
        if len(reference) > 1:
            assert_discriminating(reference)


def test_session_ignores_padding_like_pytorch(ort_session, fresh, sst2):
    """A row padded to 128 tokens gives the logits it gives unpadded (the attention mask is honoured)."""
    short = timing_batch(fresh.tokenizer(), sst2.task, sst2.eval["validation"], 4, 128, seed=5)
    lengths = short["attention_mask"].sum(axis=1)
    assert lengths.max() < 128
    for row, length in enumerate(lengths):
        unpadded = {k: v[row : row + 1, :length] for k, v in short.items()}
        np.testing.assert_allclose(ort_session.run(unpadded)[0], ort_session.run(short)[row], rtol=0, atol=PARITY)


def test_deployed_files_and_size(ort_session, fresh):
    onnx_file, config = onnx_export_dir(fresh.path) / ONNX_FILE, fresh.path / "config.json"
    assert ort_session.deployed_files == [onnx_file, config]
    size = size_of(fresh, ort_session)
    assert size["size_bytes"] == onnx_file.stat().st_size + config.stat().st_size
    assert size["size_bytes"] > 4 * 1_000_000   # ~1.01M fp32 weights
    assert (size["params"], size["nonzero_params"]) == fresh.parameter_counts()


def test_session_options_are_timing_friendly():
    edge = session_options(BackendOptions(name="onnxruntime", profile="edge"), OrtOptions())
    assert edge.intra_op_num_threads == 1
    assert edge.inter_op_num_threads == 1
    assert edge.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert edge.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert edge.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert edge.get_session_config_entry("session.inter_op.allow_spinning") == "0"

    options = BackendOptions(name="onnxruntime", threads=3,
                             options={"graph_optimization": "basic", "allow_spinning": True})
    chosen = session_options(options, OrtOptions.model_validate(options.options))
    assert chosen.intra_op_num_threads == 3 == options.resolved_threads()
    assert chosen.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert chosen.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert chosen.get_session_config_entry("session.inter_op.allow_spinning") == "1"


def test_loaded_session_uses_the_options(fresh):
    options = BackendOptions(name="onnxruntime", threads=2, options={"graph_optimization": "disabled"})
    session = BACKENDS.get("onnxruntime")().load(fresh, options)
    try:
        used = session.session.get_session_options()
        assert used.intra_op_num_threads == 2
        assert used.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert used.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert session.session.get_providers() == ["CPUExecutionProvider"]
    finally:
        session.close()


# ---------------------------------------------------------------- availability and options


def test_cuda_is_unavailable_with_the_reason(fresh):
    backend = BACKENDS.get("onnxruntime")()
    options = BackendOptions(name="onnxruntime", device="cuda")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    availability = backend.availability(options)
    assert not availability.ok
    assert "CUDAExecutionProvider" in availability.reason and onnxruntime.__version__ in availability.reason
    with pytest.raises(UnsupportedError, match="CUDAExecutionProvider"):
        backend.load(fresh, options)


def test_backend_precision_is_refused_with_a_reason(fresh):
    backend = BACKENDS.get("onnxruntime")()
    availability = backend.availability(BackendOptions(name="onnxruntime", precision="fp16"))
    assert not availability.ok and "fp16" in availability.reason and "quantize" in availability.reason
    assert backend.availability(BackendOptions(name="onnxruntime")).ok


@pytest.mark.parametrize("bad", [{"spinning": True}, {"graph_optimization": "max"}, {"inter_op_threads": 0}])
def test_bad_options_fail_at_load(fresh, bad):
    with pytest.raises(ValidationError) as info:
        BACKENDS.get("onnxruntime")().load(fresh, BackendOptions(name="onnxruntime", options=bad))
    assert info.value.errors()[0]["loc"] == (next(iter(bad)),)


def test_bad_options_in_a_suite_are_one_line():
    raw = {"name": "x", "tasks": ["sst2"],
           "backends": [{"name": "onnxruntime", "options": {"graph_optimisation": "all"}}]}
    with pytest.raises(UsageError) as info:
        validate_suite(raw, "suite.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("suite.yaml: backends[0].options.graph_optimisation: unknown field")
    assert "did you mean 'graph_optimization'?" in message


# ---------------------------------------------------------------- external data


@pytest.fixture(scope="module")
def external(fresh, tmp_path_factory):
    """An ``onnx`` artifact whose weights live in model.onnx_data beside model.onnx."""
    folder = tmp_path_factory.mktemp("external") / "artifact"
    folder.mkdir()
    model = onnx.load(str(fresh.onnx_files()[0]))
    onnx.save_model(model, str(folder / ONNX_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)
    shutil.copyfile(fresh.path / "config.json", folder / "config.json")
    fresh.tokenizer().save_pretrained(folder)
    ModelArtifact(path=folder, task="sst2", num_labels=2, format="onnx", hash="external").write_meta()
    return ModelArtifact.load(folder)


def test_external_data_is_deployed_and_counted(external, fresh):
    folder = external.path
    assert (folder / META_FILE).is_file()
    assert external.deployed_files() == [folder / ONNX_FILE, folder / "model.onnx_data", folder / "config.json"]
    assert (folder / ONNX_FILE).stat().st_size < 100_000 < (folder / "model.onnx_data").stat().st_size
    assert external.size_bytes() == sum(p.stat().st_size for p in external.deployed_files())
    assert external.onnx_files() == [folder / ONNX_FILE, folder / "model.onnx_data"]
    inline = FORMATS["onnx"].parameter_counts(onnx_export_dir(fresh.path))
    assert external.parameter_counts() == inline
    assert inline[0] > 1_000_000


def test_external_data_runs_in_a_session(external, fresh, torch_model, sst2):
    session = BACKENDS.get("onnxruntime")().load(external, BackendOptions(name="onnxruntime", threads=1))
    try:
        assert session.deployed_files == external.deployed_files()
        assert size_of(external, session)["size_bytes"] == external.size_bytes()
        batch = batches(fresh, sst2)[2]
        np.testing.assert_allclose(session.run(batch), torch_logits(torch_model, batch), rtol=0, atol=PARITY)
    finally:
        session.close()
