"""torch.compile on the PyTorch backend: compiled logits equal eager ones, compile time is a build cost reported
in the row's ``runtime`` and never inside a latency (cold included), and a model or machine that cannot compile
gives skipped cells with the reason.

The bookkeeping is checked with a stand-in compiler whose compiles take a known time (fast, exact); one test
compiles the tiny BERT with inductor for real (about 10 to 25 s on 2 cores, most of it inductor's C++ build)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import compbench.backends.torch as torch_backend
from compbench.backends.torch import TorchBackend, TorchOptions
from compbench.cache.store import ArtifactStore
from compbench.common.errors import Failures, UnsupportedError
from compbench.common.progress import Reporter
from compbench.config.backends import BackendOptions
from compbench.config.cells import Cell
from compbench.config.loading import validate_suite
from compbench.config.measure import MeasureConfig
from compbench.measurement.cell import CellMeasurement
from compbench.measurement.timing import Call, cold_ms, timed_calls
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource

COMPILE_S = 0.3          # the stand-in compiler's seconds per graph
COMPILED = BackendOptions(name="torch", threads=1, options={"compile": True})
QUICK = MeasureConfig(warmup_iters=1, min_iters=5, max_iters=5, min_seconds=0.0)


def batch_of(rows: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, length), dtype=np.int64)
    mask[1:, length // 2:] = 0                        # rows after the first are padded
    return {"input_ids": rng.integers(1000, 2000, (rows, length)) * mask, "attention_mask": mask,
            "token_type_ids": np.zeros((rows, length), dtype=np.int64)}


class StandInCompiler:
    """``torch.compile`` as dynamo with ``dynamic=True`` behaves: a graph per kind of shape (a dimension of 1 is
    its own kind), each first call of a kind compiling for ``COMPILE_S``; ``graphs`` is dynamo's counter."""

    def __init__(self) -> None:
        self.graphs = 0
        self.kinds: set = set()
        self.fail_with: Exception | None = None

    def __call__(self, model, mode=None, dynamic=None):
        assert dynamic is True
        compiler = self

        def compiled(**inputs):
            kind = tuple(size == 1 for size in inputs["input_ids"].shape)
            if compiler.fail_with is not None:
                raise compiler.fail_with
            if kind not in compiler.kinds:
                time.sleep(COMPILE_S)
                compiler.kinds.add(kind)
                compiler.graphs += 1
            return model(**inputs)
        return compiled


@pytest.fixture
def stand_in(monkeypatch):
    compiler = StandInCompiler()
    monkeypatch.setattr(torch, "compile", compiler)
    monkeypatch.setattr(torch_backend, "compiled_graphs", lambda: compiler.graphs)
    return compiler


def test_compile_time_is_booked_in_load_and_prepare_never_in_a_timed_call(stand_in, tiny_artifact):
    session = TorchBackend().load(tiny_artifact, COMPILED)
    try:
        info = session.runtime_info()
        assert info["compile_seconds"] >= COMPILE_S and info["compiled_shapes"] == 1    # the sample batch, at load
        cold = cold_ms(session, batch_of(2, 16))         # the graph load compiled serves it
        assert cold < COMPILE_S * 1000 / 3 and session.runtime_info()["compiled_shapes"] == 1
        cold = cold_ms(session, batch_of(1, 16))         # a batch of one row compiles once more, in prepare
        info = session.runtime_info()
        assert info["compiled_shapes"] == info["compiled_graphs"] == 2 and info["compile_seconds"] >= 2 * COMPILE_S
        assert cold < COMPILE_S * 1000 / 3
        timed, _ = timed_calls(Call.of(session, batch_of(1, 9)), None, QUICK)
        assert max(timed) < COMPILE_S * 1000 / 3
        session.run(batch_of(3, 1))                      # evaluation's shapes are booked too
        assert session.runtime_info()["compiled_shapes"] == 3
        assert set(info) == {"compile_mode", "compile_dynamic", "compile_seconds", "compiled_shapes",
                             "compiled_graphs"} and info["compile_mode"] == "default"
    finally:
        session.close()


def test_a_compile_during_a_timed_call_is_an_error_not_a_latency(stand_in, tiny_artifact):
    session = TorchBackend().load(tiny_artifact, COMPILED)
    try:
        call = Call.of(session, batch_of(2, 8))
        call.time_ms()
        stand_in.kinds.clear()                           # as if a guard failed: the next call compiles
        with pytest.raises(RuntimeError, match="compiled during a timed call"):
            call.time_ms()
    finally:
        session.close()


def test_a_model_that_fails_to_compile_is_a_skipped_cell(stand_in, tiny_artifact, tmp_path):
    stand_in.fail_with = RuntimeError("no lowering for aten::frobnicate\n  a long traceback follows")
    threads = torch.get_num_threads()
    with pytest.raises(UnsupportedError) as caught:
        TorchBackend().load(tiny_artifact, COMPILED)
    assert str(caught.value) == "torch.compile failed: RuntimeError: no lowering for aten::frobnicate"
    assert torch.get_num_threads() == threads           # the half-made session was closed
    suite = validate_suite({"name": "c", "tasks": ["sst2"], "backends": [
        {"name": "torch", "threads": 1, "options": {"compile": True}}],
        "measure": {"batch_sizes": [1, 2], "seq_lens": [16]}}, "c.yaml")
    cell = Cell("sst2", suite.pipelines[0], suite.backends[0])
    rows = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures()).measure(
        cell, tiny_artifact, data=None)
    assert [(row["status"], row["reason"]) for row in rows] == [("skipped", str(caught.value))] * 2


def test_without_a_cpp_compiler_compiled_cells_are_skipped(tiny_artifact):
    import torch._inductor.config as inductor_config

    backend = TorchBackend()
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        availability = backend.availability(COMPILED)
        assert not availability.ok and "needs a C++ compiler" in availability.reason, availability
        assert "/nonexistent/g++" in availability.reason
        assert backend.availability(BackendOptions(name="torch")).ok      # eager needs none
        with pytest.raises(UnsupportedError, match="C\\+\\+ compiler"):
            backend.load(tiny_artifact, COMPILED)


def test_compile_is_refused_for_causal_lms(tiny_causal_lm):
    with pytest.raises(UnsupportedError, match="torch.compile is not measured for causal LMs"):
        TorchBackend().load(tiny_causal_lm, COMPILED)


def test_compile_options():
    from pydantic import ValidationError

    assert TorchOptions(compile=True, compile_mode="max-autotune").compile_mode == "max-autotune"
    with pytest.raises(ValidationError, match="applies with compile: true"):
        TorchOptions(compile_mode="reduce-overhead")
    with pytest.raises(ValidationError):
        TorchOptions(compile=True, compile_mode="fastest")
    suite = validate_suite({"name": "c", "tasks": ["sst2"], "backends": [
        {"name": "torch", "options": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"}}]}, "c.yaml")
    assert suite.backends[0].label == "torch:cpu:default:compile=True:compile_mode=max-autotune-no-cudagraphs"


@pytest.fixture(scope="module")
def compiled(tiny_artifact):
    """The tiny BERT compiled by inductor for real, from a clean dynamo state (nothing reused in this process)."""
    torch._dynamo.reset()
    start = time.perf_counter()
    session = TorchBackend().load(tiny_artifact, COMPILED)
    session.load_seconds = time.perf_counter() - start
    yield session
    session.close()


def test_inductor_logits_equal_eager_and_its_compile_stays_out_of_the_latency(compiled, tiny_artifact):
    info = compiled.runtime_info()
    assert 0 < info["compile_seconds"] <= compiled.load_seconds and info["compiled_shapes"] == 1, info
    eager = TorchBackend().load(tiny_artifact, BackendOptions(name="torch", threads=1))
    try:
        for shape in [(2, 16), (5, 7), (3, 40)]:         # one dynamic graph serves every one of these
            batch = batch_of(*shape, seed=shape[1])
            np.testing.assert_allclose(compiled.run(batch), eager.run(batch), atol=1e-5, rtol=1e-4)
        assert compiled.runtime_info()["compiled_shapes"] == 1
        batch = batch_of(2, 24)
        cold = cold_ms(compiled, batch)
        timed, _ = timed_calls(Call.of(compiled, batch), None, QUICK)
    finally:
        eager.close()
    seconds = compiled.runtime_info()["compile_seconds"]
    # the compile (seconds) is nowhere in the first call or the timed ones (milliseconds)
    assert cold < seconds * 1000 / 10 and max(timed) < seconds * 1000 / 10, (cold, timed, seconds)


def test_a_compiled_cell_writes_its_compile_into_the_row(compiled, tiny_artifact, glue_data, tmp_path):
    """Through the cell, as a run measures it: the row's runtime names the compile (this process compiled the
    architecture already, so the cell's own compile reuses its graph), and its latencies are milliseconds."""
    sst2 = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=48,
                          seed=1)
    suite = validate_suite({"name": "c", "tasks": ["sst2"], "backends": [
        {"name": "torch", "threads": 1, "options": {"compile": True}}],
        "measure": {"batch_sizes": [2], "seq_lens": [16], "warmup_iters": 1, "min_iters": 5,
                    "min_seconds": 0.0, "max_seconds": 1.0}}, "c.yaml")
    cell = Cell("sst2", suite.pipelines[0], suite.backends[0])
    (row,) = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures()).measure(
        cell, tiny_artifact, sst2)
    assert row["status"] == "ok", row["reason"]
    assert row["runtime"]["compile_mode"] == "default" and row["runtime"]["compile_dynamic"] is True
    assert row["runtime"]["compile_seconds"] >= 0 and row["runtime_precision"] == "fp32"
    assert row["latency_ms"]["cold"] < 1000 and row["metric"] is not None
