"""Measurement rules on a tiny random BERT (plumbing) with real SST-2 rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from compbench.common.plugins import BACKENDS
from compbench.config.backends import BackendOptions
from compbench.config.measure import MeasureConfig
from compbench.measurement.cell import size_of
from compbench.measurement.timing import Call, latency_stats, timed_calls
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, pad_batch, predict_logits, timing_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=64,
                          seed=1)


@pytest.fixture
def session(tiny_artifact):
    session = BACKENDS.get("torch")().load(tiny_artifact, BackendOptions(name="torch", threads=1))
    yield session
    session.close()


def test_size_counts_what_is_on_disk(tiny_artifact, session):
    size = size_of(tiny_artifact, session)
    model = tiny_artifact.torch_model()
    on_disk = ((tiny_artifact.path / "model.safetensors").stat().st_size
               + (tiny_artifact.path / "config.json").stat().st_size)
    assert size["size_bytes"] == on_disk
    assert size["params"] == sum(t.numel() for t in model.state_dict().values())
    assert 0 < size["nonzero_params"] <= size["params"]


def test_nonzero_params_follow_zeroed_weights(tiny_artifact, session, tmp_path):
    from compbench.cache.store import ArtifactStore
    from compbench.models.artifact import save_hf_artifact

    model = tiny_artifact.torch_model()
    with torch.no_grad():
        model.classifier.weight.zero_()
    zeroed = ArtifactStore(tmp_path).build("z", lambda f: save_hf_artifact(f, model, tiny_artifact.tokenizer(),
                                                                           task="sst2", lineage=[]))
    assert tiny_artifact.parameter_counts()[1] - zeroed.parameter_counts()[1] == model.classifier.weight.numel()


def test_latency_stats_on_known_samples():
    stats = latency_stats(np.arange(1, 101, dtype=float), cold_ms=500.0)
    assert stats["p10"] == pytest.approx(10.9)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["n"] == 100 and stats["cold"] == 500.0 and stats["min"] == 1.0


def test_timing_honours_min_iters_and_min_seconds(session, tiny_artifact, sst2):
    batch = timing_batch(tiny_artifact.tokenizer(), sst2.task, sst2.eval["validation"], 2, 16, seed=0)
    config = MeasureConfig(warmup_iters=1, min_iters=7, max_iters=7, min_seconds=0.0)
    samples, _ = timed_calls(Call.of(session, batch), None, config)
    few = latency_stats(np.asarray(samples), 0.0)
    assert few["n"] == 7 and len(samples) == 7 and min(samples) == pytest.approx(few["min"], abs=1e-4)
    start = time.perf_counter()
    samples, _ = timed_calls(Call.of(session, batch), None, MeasureConfig(warmup_iters=0, min_iters=1, min_seconds=0.3))
    elapsed = time.perf_counter() - start
    long = latency_stats(np.asarray(samples), 0.0)
    # the loop runs for at least min_seconds of wall time; the calls themselves fill most of it (the rest is the
    # loop's own bookkeeping between calls, which no sample counts)
    assert elapsed >= 0.3 and long["n"] * long["mean"] >= 0.8 * 300.0
    assert long["p50"] <= long["p90"] <= long["p99"]


def test_timing_batch_is_real_rows_at_exact_shape(tiny_artifact, sst2):
    tokenizer = tiny_artifact.tokenizer()
    batch = timing_batch(tokenizer, sst2.task, sst2.eval["validation"], 5, 48, seed=3)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (5, 48) and v.dtype == np.int64 for v in batch.values())
    first = tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    texts = [tokenizer.decode(tokenizer(t)["input_ids"], skip_special_tokens=True)
             for t in sst2.eval["validation"]["sentence"]]
    assert any(text.startswith(first) for text in texts)
    again = timing_batch(tokenizer, sst2.task, sst2.eval["validation"], 5, 48, seed=3)
    assert again["input_ids"].tolist() == batch["input_ids"].tolist()


def test_session_matches_model_and_batched_prediction_keeps_order(session, tiny_artifact, sst2):
    tokenizer = tiny_artifact.tokenizer()
    rows = encode_rows(tokenizer, sst2.task, sst2.eval["validation"], max_seq_len=64)
    model = tiny_artifact.torch_model().eval()
    with torch.no_grad():
        one_by_one = np.concatenate([
            model(**{k: torch.from_numpy(v) for k, v in pad_batch(tokenizer, [f]).items()}).logits.numpy()
            for f in rows.features
        ])
    batched = predict_logits(session.run, tokenizer, rows, batch_size=16)
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6)   # rows differ by ~3e-5 in this tiny model
    assert np.ptp(one_by_one[:, 0]) > 1e-5


def test_session_restores_thread_count(tiny_artifact):
    before = torch.get_num_threads()
    session = BACKENDS.get("torch")().load(tiny_artifact, BackendOptions(name="torch", profile="edge"))
    assert torch.get_num_threads() == 1
    session.close()
    assert torch.get_num_threads() == before


def test_unavailable_device_is_reported_not_raised():
    backend = BACKENDS.get("torch")()
    cuda = backend.availability(BackendOptions(name="torch", device="cuda"))
    assert cuda.ok == torch.cuda.is_available()
    if not cuda.ok:
        assert "CUDA" in cuda.reason


def test_a_cpu_session_times_on_the_host_and_has_no_device_costs(session, tiny_artifact, sst2):
    from compbench.backends.base import Clock
    from compbench.measurement.timing import device_costs

    batch = timing_batch(tiny_artifact.tokenizer(), sst2.task, sst2.eval["validation"], 2, 16, seed=0)
    assert type(session.clock()) is Clock
    assert session.transfer_ms(batch) is None and session.memory_peak() is None
    assert device_costs(session, batch, MeasureConfig()) == {}
    prepared = session.prepare(batch)
    assert session.clock().time_ms(lambda: session.run_prepared(prepared)) > 0
