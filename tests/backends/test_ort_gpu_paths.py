"""ONNX Runtime's GPU paths: the ``ort-fp16`` quantize method, the session timing hooks, and the
CUDA execution provider with IO binding.

This machine's onnxruntime is the CPU build, so the CUDA tests at the end are skipped here and
run where onnxruntime-gpu and a GPU are; what the CUDA path decides without a GPU (which
providers are asked for, refusing a session that came up on the CPU) is tested here with a
stand-in for ``InferenceSession``, and only that.

fp16 on the CPU provider (onnxruntime 1.32, x86 without AVX512-FP16): the model loads and runs.
ONNX Runtime inserts Casts so that MatMul, Gemm, Add, Softmax and GELU run in fp32 (only Gather,
Reshape, Transpose and some LayerNormalizations stay fp16), at 1.1x the fp32 latency of the tiny
model (batch 8 x 128, one thread); the backend allows it, and its logits follow fp32's within
fp16 rounding.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, numpy_helper

from compbench.backends.base import Clock
from compbench.backends.onnxruntime import CudaInputs, HostInputs, check_provider, execution_providers
from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.backends import BackendOptions
from compbench.config.measure import MeasureConfig
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.measurement.timing import Call, cold_ms, latency_stats, timed_calls
from compbench.models.artifact import ModelArtifact
from compbench.models.formats.base import FORMATS
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, predict_logits, timing_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource

CUDA_IN_ORT = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
THREE_CALLS = MeasureConfig(warmup_iters=1, min_iters=3, max_iters=3, min_seconds=0)


def timed(session, batch) -> tuple[dict, list[float]]:
    """The cold call, then three timed calls, as a cell times them."""
    cold = cold_ms(session, batch)
    samples, _ = timed_calls(Call.of(session, batch), None, THREE_CALLS)
    return latency_stats(np.asarray(samples), cold), samples
needs_cuda = pytest.mark.skipif(not CUDA_IN_ORT, reason="needs onnxruntime-gpu (CUDAExecutionProvider) and a GPU")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=64,
                          seed=3)


@pytest.fixture(scope="module")
def fp16_artifact(responsive, sst2, tmp_path_factory) -> ModelArtifact:
    builder = PipelineBuild(responsive, sst2, ArtifactStore(tmp_path_factory.mktemp("ort-fp16")), seed=0, device="cpu",
                            reporter=Reporter(enabled=False))
    step = StepConfig(compressor="quantize", params={"method": "ort-fp16"})
    artifact = builder.run(PipelineConfig(name="f", steps=[step]))
    assert artifact.lineage[-1]["params"]["method"] == "ort-fp16"
    return artifact


def load(artifact: ModelArtifact, device: str = "cpu"):
    return BACKENDS.get("onnxruntime")().load(artifact, BackendOptions(name="onnxruntime", device=device, threads=1))


def eval_logits(artifact: ModelArtifact, sst2, device: str = "cpu") -> np.ndarray:
    tokenizer = artifact.tokenizer()
    session = load(artifact, device)
    try:
        rows = encode_rows(tokenizer, sst2.task, sst2.eval["validation"], 128)
        return predict_logits(session.run, tokenizer, rows, 32)
    finally:
        session.close()


def a_batch(artifact: ModelArtifact, sst2, size: int = 4, length: int = 32) -> dict[str, np.ndarray]:
    return timing_batch(artifact.tokenizer(), sst2.task, sst2.eval["validation"], size, length, seed=size)


FP16_ATOL = 2e-3   # measured on CPU over the 64 rows: 4e-4


def assert_fp16_close(logits: np.ndarray, reference: np.ndarray) -> None:
    """Within fp16 rounding of the responsive model's logits (-0.6..-0.3 here, class margins
    spread over 0.35), and a row's class changes only where fp32 itself is within rounding of a tie
    (measured: 1 row of 64, fp32 margin 2e-5)."""
    spread = np.ptp(reference[:, 1] - reference[:, 0])
    assert spread > 50 * FP16_ATOL, "rows too alike for the tolerance to mean anything"
    np.testing.assert_allclose(logits, reference, rtol=0, atol=FP16_ATOL)
    flipped = logits.argmax(axis=1) != reference.argmax(axis=1)
    assert flipped.mean() < 0.05
    assert (np.abs(reference[flipped, 1] - reference[flipped, 0]) < 2 * FP16_ATOL).all()


# ---------------------------------------------------------------- ort-fp16


def test_ort_fp16_stores_half_precision_weights(fp16_artifact, responsive):
    assert (fp16_artifact.format, fp16_artifact.precision) == ("onnx", "fp16")
    assert fp16_artifact.deployed_files() == [fp16_artifact.path / "model.onnx", fp16_artifact.path / "config.json"]
    graph = onnx.load(str(fp16_artifact.onnx_files()[0])).graph
    float_types = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    stored = [i.data_type for i in graph.initializer if i.data_type in float_types]
    stored += [a.t.data_type for n in graph.node if n.op_type == "Constant" for a in n.attribute
               if a.name == "value" and a.t.data_type in float_types]
    assert stored and set(stored) == {TensorProto.FLOAT16}, Counter(stored)
    # keep_io_types: fed and read like the fp32 model
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [
        (name, TensorProto.INT64) for name in INPUTS]
    assert [(o.name, o.type.tensor_type.elem_type) for o in graph.output] == [("logits", TensorProto.FLOAT)]
    # the attention mask's float32 minimum is clamped into fp16's range, not turned into -inf
    assert all(np.isfinite(numpy_helper.to_array(a.t)).all() for n in graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value")

    fp32_export = responsive.onnx_files()[0]
    fp32_bytes = fp32_export.stat().st_size + (responsive.path / "config.json").stat().st_size
    assert 0.48 < fp16_artifact.size_bytes() / fp32_bytes < 0.53   # measured 0.51
    # the graph holds the fp32 export's weights (which stores a fresh model's alike biases once); rows report the
    # source's parameters
    assert FORMATS["onnx"].parameter_counts(fp16_artifact.path)[0] == \
        FORMATS["onnx"].parameter_counts(fp32_export.parent)[0]
    assert fp16_artifact.parameter_counts() == responsive.parameter_counts()


def test_ort_fp16_runs_on_cpu_and_follows_fp32(fp16_artifact, responsive, sst2):
    session = load(fp16_artifact)
    try:
        assert session.session.get_providers() == ["CPUExecutionProvider"]
    finally:
        session.close()
    assert_fp16_close(eval_logits(fp16_artifact, sst2), eval_logits(responsive, sst2))


def test_ort_fp16_takes_no_parameters():
    from pydantic import ValidationError

    from compbench.compressors.quantize import QuantizeParams

    assert QuantizeParams(method="ort-fp16").method == "ort-fp16"
    with pytest.raises(ValidationError,
                       match="method 'ort-fp16' does not use per_channel; it reads: no other parameters"):
        QuantizeParams(method="ort-fp16", per_channel=True)


# ---------------------------------------------------------------- CPU timing hooks


def test_cpu_session_timing_hooks(responsive, sst2):
    session = load(responsive)
    try:
        assert isinstance(session.placement, HostInputs)
        batch = a_batch(responsive, sst2)
        batch["attention_mask"] = batch["attention_mask"].astype(np.int32)   # fed as the graph's int64
        prepared = session.prepare(batch)
        assert list(prepared) == INPUTS
        assert all(v.dtype == np.int64 and v.flags.c_contiguous for v in prepared.values())
        assert session.run_prepared(prepared) is None
        clock = session.clock()
        assert type(clock) is Clock and clock.time_ms(lambda: session.run_prepared(prepared)) > 0
        assert session.transfer_ms(batch) is None
        session.reset_memory_peak()
        assert session.memory_peak() is None
        np.testing.assert_array_equal(session.run(batch), session.session.run(None, prepared)[0])

        stats, samples = timed(session, batch)
        assert stats["n"] == len(samples) == 3 and stats["cold"] > 0 and min(samples) > 0
    finally:
        session.close()


def test_cpu_run_takes_non_contiguous_rows(responsive, sst2):
    session = load(responsive)
    try:
        batch = a_batch(responsive, sst2, size=4, length=64)
        every_other = {name: array[::2] for name, array in batch.items()}
        assert not every_other["input_ids"].flags.c_contiguous
        np.testing.assert_array_equal(session.run(every_other), session.run(batch)[::2])
    finally:
        session.close()


# ---------------------------------------------------------------- CUDA decisions (no GPU needed)


def test_cuda_asks_for_the_cuda_provider_alone():
    assert execution_providers("cuda") == [("CUDAExecutionProvider", {"device_id": 0})]
    assert execution_providers("cpu") == ["CPUExecutionProvider"]


class StandInSession:
    """Stands in for ``onnxruntime.InferenceSession`` where only its providers matter."""

    created: list[dict] = []

    def __init__(self, path, sess_options=None, providers=None, came_up_on=("CPUExecutionProvider",)) -> None:
        StandInSession.created.append({"path": path, "providers": providers})
        self.came_up_on = list(came_up_on)

    def get_providers(self) -> list[str]:
        return self.came_up_on

    def get_inputs(self):
        return [SimpleNamespace(name=name, type="tensor(int64)") for name in INPUTS]


def test_a_cuda_session_that_came_up_on_the_cpu_is_refused(responsive, monkeypatch):
    """onnxruntime-gpu falls back to the CPU (with only a logged warning) when the CUDA provider
    cannot start; timing that session as CUDA would be a lie."""
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", StandInSession)
    StandInSession.created.clear()
    with pytest.raises(UnsupportedError) as info:
        load(responsive, "cuda")
    message = str(info.value)
    assert "could not start CUDAExecutionProvider" in message and "came up on CPUExecutionProvider" in message
    assert "cuDNN" in message and "\n" not in message
    assert StandInSession.created[-1]["providers"] == [("CUDAExecutionProvider", {"device_id": 0})]


def test_a_cuda_session_on_cuda_reads_through_io_binding(responsive, monkeypatch):
    class OnCuda(StandInSession):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs, came_up_on=("CUDAExecutionProvider", "CPUExecutionProvider"))

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", OnCuda)
    session = load(responsive, "cuda")
    assert isinstance(session.placement, CudaInputs) and session.placement.device_id == 0
    assert session.deployed_files == [responsive.onnx_files()[0], responsive.path / "config.json"]


def test_check_provider_wants_the_device_first():
    check_provider(StandInSession("m", came_up_on=["CUDAExecutionProvider", "CPUExecutionProvider"]), "cuda")
    check_provider(StandInSession("m", came_up_on=["CPUExecutionProvider"]), "cpu")
    with pytest.raises(UnsupportedError, match="came up on no provider"):
        check_provider(StandInSession("m", came_up_on=[]), "cuda")


# ---------------------------------------------------------------- CUDA (onnxruntime-gpu on a GPU)


@needs_cuda
def test_cuda_io_binding_gives_the_logits_of_run(responsive, sst2):
    session = load(responsive, "cuda")
    try:
        assert session.session.get_providers()[0] == "CUDAExecutionProvider"
        batch = a_batch(responsive, sst2, size=8, length=64)
        prepared = session.prepare(batch)
        assert isinstance(prepared, onnxruntime.IOBinding)
        on_device = session.placement.to_device(session.feeds(batch))
        assert {value.device_name().lower() for value in on_device.values()} == {"cuda"}
        assert all(value.data_type() == "tensor(int64)" for value in on_device.values())
        assert session.run_prepared(prepared) is None
        [logits] = prepared.get_outputs()
        assert logits.device_name().lower() == "cuda"    # left on the GPU: the timed call copies nothing back
        reference = session.run(batch)
        np.testing.assert_allclose(prepared.copy_outputs_to_cpu()[0], reference, rtol=0, atol=1e-6)
        cpu = load(responsive)
        try:   # CUDA may use TF32 for fp32 MatMuls
            np.testing.assert_allclose(reference, cpu.run(batch), rtol=0, atol=2e-3)
        finally:
            cpu.close()
        assert session.transfer_ms(batch) > 0
        assert session.clock().time_ms(lambda: session.run_prepared(prepared)) > 0
        stats, _ = timed(session, batch)
        assert stats["n"] == 3
    finally:
        session.close()


@needs_cuda
def test_ort_fp16_on_cuda_follows_fp32(fp16_artifact, responsive, sst2):
    assert_fp16_close(eval_logits(fp16_artifact, sst2, "cuda"), eval_logits(responsive, sst2))
