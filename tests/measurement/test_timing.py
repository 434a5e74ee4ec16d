"""Timings that tell signal from noise: the cold call is the first after load, a speed-up is measured with
the teacher's calls interleaved in one job, and an A/A pair of the same real model is "no difference"."""

from __future__ import annotations

import time

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from compbench.backends.torch import TorchBackend, TorchSession
from compbench.cache.store import ArtifactStore
from compbench.common.errors import Failures
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.common.statistics import median_interval, median_ratio
from compbench.config.backends import BackendOptions
from compbench.config.cells import Cell
from compbench.config.loading import validate_suite
from compbench.config.measure import MeasureConfig
from compbench.measurement.cell import CellMeasurement
from compbench.measurement.timing import Call, shape_timing, timed_calls
from compbench.models.artifact import save_hf_artifact
from compbench.results.analysis import speedup_columns
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import timing_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.students import layer_subset

SLOW_FIRST_CALL_S = 0.2


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=48,
                          seed=1)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, minilm_path):
    """The real all-MiniLM-L6-v2 weights with a (fresh, seeded) two-class head: a real small model to time."""
    import torch

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    from transformers import AutoTokenizer

    store = ArtifactStore(tmp_path_factory.mktemp("minilm"))
    teacher = store.build("minilm", lambda f: save_hf_artifact(f, model, AutoTokenizer.from_pretrained(minilm_path),
                                                               task="sst2", lineage=[]))
    half = store.build("minilm-3", lambda f: save_hf_artifact(f, layer_subset(model, [0, 2, 4]), teacher.tokenizer(),
                                                              task="sst2", lineage=[]))
    return teacher, half


def calls(artifact, batch, threads=1) -> Call:
    return Call.of(TorchBackend().load(artifact, BackendOptions(name="torch", threads=threads)), batch)


def test_an_a_a_pair_of_the_same_real_model_is_no_difference_and_half_the_layers_is_faster(minilm, sst2):
    teacher, half = minilm
    config = MeasureConfig(warmup_iters=3, min_iters=20, min_seconds=0.5, max_seconds=8.0)
    batch = timing_batch(teacher.tokenizer(), sst2.task, sst2.eval["validation"], 1, 64, seed=0)
    same_model, reference = calls(teacher, batch), calls(teacher, batch)
    model_ms, reference_ms = timed_calls(same_model, reference, config)
    a_a = shape_timing(model_ms, reference_ms, 0.0, config, seed=0)["speedup"]
    assert not speedup_columns({"status": "ok", "speedup": a_a}, None)["speedup_significant"], a_a   # A/A
    assert a_a["interleaved"] and a_a["pairs"] == len(model_ms) >= 20
    model_ms, reference_ms = timed_calls(calls(half, batch), reference, config)
    faster = shape_timing(model_ms, reference_ms, 0.0, config, seed=0)["speedup"]
    assert faster["ci95"][0] > 1.3, faster                  # 3 of 6 layers: clearly faster
    assert speedup_columns({"status": "ok", "speedup": faster}, None)["speedup_significant"]


def test_timing_stops_when_precise_and_at_the_time_bound(minilm, sst2):
    teacher, _ = minilm
    batch = timing_batch(teacher.tokenizer(), sst2.task, sst2.eval["validation"], 1, 16, seed=0)
    call = calls(teacher, batch)
    start = time.perf_counter()
    samples, _ = timed_calls(call, None, MeasureConfig(warmup_iters=1, min_iters=5, min_seconds=0.0,
                                                       max_seconds=0.3, target_precision=1e-6))
    assert time.perf_counter() - start < 0.3 + 10 * max(samples) and len(samples) >= 5     # bounded by time
    samples, _ = timed_calls(call, None, MeasureConfig(warmup_iters=1, min_iters=5, min_seconds=0.0,
                                                       max_seconds=30.0, target_precision=0.05))
    assert median_interval(samples).relative_half_width() <= 0.06 and len(samples) < 2000   # stopped when precise


def test_the_paired_ratio_interval_cancels_drift_that_unpaired_timing_mistakes_for_a_speed_up():
    """Two identical models on a machine that slows down mid-way: timed apart (the first in the fast half, the
    second in the slow half) they look 1.5x different; interleaved, the ratio is 1 within its interval."""
    rng = np.random.default_rng(0)
    machine = np.repeat([10.0, 15.0], 50) * rng.normal(1, 0.02, 100)
    apart = median_ratio(machine[50:], machine[:50], paired=False)
    assert apart.excludes(1.0) and apart.value > 1.4
    pairs = machine * rng.normal(1, 0.02, 100), machine * rng.normal(1, 0.02, 100)
    interleaved = median_ratio(*pairs, paired=True)
    assert not interleaved.excludes(1.0) and interleaved.relative_half_width() < 0.05


class SlowFirstCall(TorchSession):
    """A session whose first inference (whichever it is) takes SLOW_FIRST_CALL_S longer: a lazy initialisation."""

    def run_prepared(self, prepared):
        if not getattr(self, "_warm", False):
            self._warm = True
            time.sleep(SLOW_FIRST_CALL_S)
        return super().run_prepared(prepared)


class SlowFirstCallBackend(TorchBackend):
    name = "slow-first-call"

    def load(self, artifact, options):
        plain = super().load(artifact, options.model_copy(update={"name": "torch"}))
        return SlowFirstCall(plain.model, plain.device, options.resolved_threads(), plain.deployed_files)


def test_the_cold_latency_is_the_first_call_after_load(monkeypatch, tiny_artifact, sst2, tmp_path):
    """The bug: cold was timed after evaluation, parity and FLOP counting had warmed everything up."""
    monkeypatch.setitem(BACKENDS._classes, SlowFirstCallBackend.name, SlowFirstCallBackend)
    suite = validate_suite({"name": "cold", "tasks": ["sst2"], "backends": [{"name": SlowFirstCallBackend.name}],
                            "measure": {"batch_sizes": [1, 2], "seq_lens": [16], "warmup_iters": 1, "min_iters": 3,
                                        "min_seconds": 0.0, "max_seconds": 1.0}}, "cold.yaml")
    cell = Cell("sst2", suite.pipelines[0], suite.backends[0])
    measurement = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures())
    rows = measurement.measure(cell, tiny_artifact, sst2)
    assert [row["status"] for row in rows] == ["ok", "ok"], rows[0]["reason"]
    first, second = (row["latency_ms"] for row in rows)
    assert first["cold"] >= SLOW_FIRST_CALL_S * 1000 > 10 * second["cold"]
    assert first["p50"] < SLOW_FIRST_CALL_S * 1000 / 10


def test_a_cell_compared_with_the_teacher_is_timed_against_it(minilm, sst2, tmp_path):
    teacher, half = minilm
    suite = validate_suite({"name": "pair", "tasks": ["sst2"], "pipelines": [{"name": "half"}],
                            "backends": [{"name": "torch", "threads": 1}],
                            "measure": {"batch_sizes": [1], "seq_lens": [32], "warmup_iters": 2, "min_iters": 10,
                                        "min_seconds": 0.2, "max_seconds": 3.0}}, "pair.yaml")
    cell = Cell("sst2", suite.pipelines[1], suite.backends[0])
    measurement = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures())
    (row,) = measurement.measure(cell, half, sst2, reference=teacher)
    speedup = row["speedup"]
    assert speedup["interleaved"] and speedup["pairs"] == row["latency_ms"]["n"]
    assert speedup["ci95"][0] <= speedup["ratio"] <= speedup["ci95"][1] and speedup["ratio"] > 1.3
    assert speedup["reference_p50_ms"] > row["latency_ms"]["p50"]


def test_timing_bounds_must_be_in_order():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_iters .5. is below min_iters .20."):
        MeasureConfig(min_iters=20, max_iters=5)
    with pytest.raises(ValidationError, match="max_seconds"):
        MeasureConfig(min_seconds=5, max_seconds=1)


class ScriptedGenerate:
    """A stand-in for a ``GenerateCall``: logs its name at each call and takes ``ms`` (its first call ``first_ms``)."""

    def __init__(self, name: str, log: list[str], ms: float, first_ms: float | None = None) -> None:
        self.name, self.log, self.ms, self.first_ms = name, log, ms, first_ms

    def time_ms(self) -> float:
        self.log.append(self.name)
        if self.first_ms is not None:
            first, self.first_ms = self.first_ms, None
            return first
        return self.ms

    def first_token(self) -> "ScriptedGenerate":
        return ScriptedGenerate("first", self.log, 10.0, first_ms=500.0)      # its warm-up call is slow


def test_decoding_samples_leave_the_warm_up_out_and_turn_which_call_goes_first(monkeypatch):
    """Time to first token: the warm-up's call (500 ms here) is the cold call, never a sample (before, it was the
    first of the samples). Order: the model's first-token call went before its full call in every pair; now each
    goes first in half the pairs, and each follows the teacher's call equally often."""
    from compbench.config.measure import GenerationConfig
    from compbench.measurement import language

    log: list[str] = []
    model, teacher = ScriptedGenerate("full", log, 40.0), ScriptedGenerate("teacher", log, 50.0)
    monkeypatch.setattr(language.GenerateCall, "of", classmethod(lambda cls, *args, **kwargs: model))
    config = GenerationConfig(new_tokens=4, min_calls=20, min_seconds=0.0, max_seconds=30.0)
    batch = {"input_ids": np.zeros((1, 8), dtype=np.int64)}
    out = language.generation_timing(None, None, batch, teacher, config, MeasureConfig(bootstrap_resamples=100), 0)
    ttft, full = out["ttft_ms"], out["full_ms"]
    assert ttft["n"] == full["n"] == out["speedup"]["pairs"] == 20
    assert ttft["cold"] == 500.0 and ttft["p50"] == ttft["mean"] == ttft["p99"] == 10.0    # no sample of 500 ms
    assert out["time_per_token_ms"] == pytest.approx((40.0 - 10.0) / 3)
    timed = log[3:]                                          # after the warm-up: first, full, teacher (any order)
    pairs = [[name for name in timed[3 * i:3 * i + 3] if name != "teacher"] for i in range(20)]
    assert sum(pair == ["first", "full"] for pair in pairs) == sum(pair == ["full", "first"] for pair in pairs) == 10
    after_teacher = [timed[i + 1] for i in range(len(timed) - 1) if timed[i] == "teacher"]
    assert after_teacher.count("first") == after_teacher.count("full")
