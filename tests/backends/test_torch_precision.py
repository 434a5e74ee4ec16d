"""bf16 and fp16 on the PyTorch CPU backend: allowed only where the CPU computes them natively (AMX or
AVX512-BF16/FP16, read from the CPU's flags), weights cast or autocast, and what ran is said in the row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compbench.backends.torch import TorchBackend, TorchOptions
from compbench.cache.store import ArtifactStore
from compbench.common import cpu_features
from compbench.common.cpu_features import CpuFeatures, native_precision_problem, parse_cpuinfo, this_cpu
from compbench.common.errors import Failures, UnsupportedError
from compbench.common.progress import Reporter
from compbench.config.backends import BackendOptions
from compbench.config.cells import Cell
from compbench.config.loading import validate_suite
from compbench.measurement.cell import CellMeasurement
from compbench.models.artifact import save_hf_artifact

AMD_AVX2 = CpuFeatures("AMD EPYC", {"/proc/cpuinfo": frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})})
SAPPHIRE_RAPIDS = CpuFeatures("Intel(R) Xeon(R) Platinum 8480+", {
    "/proc/cpuinfo": frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"}),
})
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16
"""
BATCH = {"input_ids": np.array([[101, 2023, 3185, 2003, 2307, 102], [101, 6659, 102, 0, 0, 0]]),
         "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
         "token_type_ids": np.zeros((2, 6), dtype=np.int64)}


@pytest.fixture
def native_bf16(monkeypatch):
    """This process sees a CPU with AMX-BF16 (the arithmetic is still this machine's: plumbing only)."""
    monkeypatch.setattr(cpu_features, "this_cpu", lambda: SAPPHIRE_RAPIDS)


def test_cpuinfo_is_parsed_for_the_model_and_flags():
    model, flags = parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "avx512_bf16", "avx512_fp16"} <= flags and "fpu" in flags


@pytest.mark.parametrize("flags, bf16, fp16", [
    ({"amx_bf16"}, True, False),
    ({"avx512_bf16"}, True, False),
    ({"amx_fp16"}, False, True),
    ({"avx512_fp16", "avx512_bf16"}, True, True),
    ({"avx2", "avx512f"}, False, False),          # AVX-512 without its bf16/fp16 extensions emulates them
])
def test_native_precision_follows_the_flags(flags, bf16, fp16):
    cpu = CpuFeatures("Some CPU", {"/proc/cpuinfo": frozenset(flags)})
    assert (native_precision_problem("bf16", cpu) is None) is bf16
    assert (native_precision_problem("fp16", cpu) is None) is fp16
    assert native_precision_problem("fp32", cpu) is None


def test_the_reason_names_the_cpu_and_what_it_lacks():
    assert native_precision_problem("bf16", AMD_AVX2) == (
        "this CPU (AMD EPYC) has no AMX-BF16 or AVX512-BF16: PyTorch would emulate bf16, slower than fp32, "
        "and its timings would mislead")
    assert "has no AMX-FP16 or AVX512-FP16" in native_precision_problem("fp16", AMD_AVX2)


def test_unknown_flags_are_not_native_and_sources_must_agree():
    unknown = native_precision_problem("bf16", CpuFeatures("Apple M2"))
    assert unknown and "could not be read" in unknown and "AMX-BF16 or AVX512-BF16" in unknown
    split = CpuFeatures("Xeon", {"/proc/cpuinfo": frozenset({"amx_bf16"}), "torch's cpuinfo": frozenset({"avx2"})})
    reason = native_precision_problem("bf16", split)
    assert reason and "/proc/cpuinfo lists amx_bf16" in reason and "torch's cpuinfo lists neither" in reason


def test_this_machine_reads_its_flags_from_proc_and_torch():
    cpu = this_cpu()
    assert cpu.model and cpu.sources, cpu
    if hasattr(torch.cpu, "get_capabilities"):
        assert "torch's cpuinfo" in cpu.sources
        # the two sources agree on what matters here
        for flag in ("amx_bf16", "avx512_bf16", "amx_fp16", "avx512_fp16"):
            assert len({flag in flags for flags in cpu.sources.values()}) == 1, (flag, cpu.sources)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["weights", "autocast"])
def test_this_cpu_is_allowed_bf16_and_fp16_only_if_it_computes_them(precision, mode):
    options = BackendOptions(name="torch", precision=precision, options={"precision_mode": mode})
    availability = TorchBackend().availability(options)
    expected = native_precision_problem(precision)
    assert availability.ok is (expected is None)
    if expected:          # this AMD EPYC (AVX2 only): no bf16 or fp16 arithmetic
        assert availability.reason == expected and this_cpu().model in expected


def test_on_this_cpu_a_bf16_cell_is_skipped_with_the_reason(tiny_artifact, glue_data, tmp_path):
    if native_precision_problem("bf16") is None:
        pytest.skip("this CPU computes bf16 natively")
    suite = validate_suite({"name": "bf16", "tasks": ["sst2"], "data": {"dir": str(glue_data)},
                            "backends": [{"name": "torch", "precision": "bf16", "threads": 1,
                                          "options": {"precision_mode": "autocast"}}],
                            "measure": {"batch_sizes": [1, 2], "seq_lens": [16]}}, "bf16.yaml")
    cell = Cell("sst2", suite.pipelines[0], suite.backends[0])
    rows = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures()).measure(
        cell, tiny_artifact, data=None)
    assert [row["status"] for row in rows] == ["skipped", "skipped"]
    assert rows[0]["reason"] == native_precision_problem("bf16")
    assert "AMX-BF16 or AVX512-BF16" in rows[0]["reason"]


def test_with_amx_bf16_the_weights_are_cast_and_the_row_says_so(native_bf16, tiny_artifact):
    backend = TorchBackend()
    options = BackendOptions(name="torch", precision="bf16", threads=1)
    assert backend.availability(options).ok
    session = backend.load(tiny_artifact, options)
    try:
        assert session.runtime_info() == {"precision": "bf16", "precision_mode": "weights"}
        assert {p.dtype for p in session.model.parameters()} == {torch.bfloat16}
        assert session.run(BATCH).dtype == np.float32
    finally:
        session.close()
    assert backend.compute_precision(options, "fp32") == "bf16"


def test_with_amx_bf16_autocast_keeps_fp32_weights_and_computes_in_bf16(native_bf16, tiny_artifact):
    backend = TorchBackend()
    options = BackendOptions(name="torch", precision="bf16", threads=1, options={"precision_mode": "autocast"})
    session = backend.load(tiny_artifact, options)
    seen = []
    try:
        assert session.runtime_info() == {"precision": "bf16", "precision_mode": "autocast"}
        assert {p.dtype for p in session.model.parameters()} == {torch.float32}
        dense = session.model.bert.encoder.layer[0].intermediate.dense
        handle = dense.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        logits = session.run(BATCH)
        handle.remove()
    finally:
        session.close()
    assert seen == [torch.bfloat16]          # the products ran in bf16
    reference = TorchBackend().load(tiny_artifact, BackendOptions(name="torch", threads=1))
    try:
        expected = reference.run(BATCH)
    finally:
        reference.close()
    np.testing.assert_allclose(logits, expected, atol=0.05)
    assert backend.compute_precision(options, "fp32") == "bf16"


def test_autocast_on_an_fp32_entry_is_plain_fp32(tiny_artifact):
    """The teacher a bf16 autocast cell is timed against is the same entry at fp32: it must load, in fp32."""
    session = TorchBackend().load(tiny_artifact, BackendOptions(name="torch", threads=1,
                                                                options={"precision_mode": "autocast"}))
    try:
        assert session.autocast is None and session.runtime_info() == {}
        assert {p.dtype for p in session.model.parameters()} == {torch.float32}
    finally:
        session.close()


def test_an_fp16_model_is_refused_on_a_cpu_without_fp16(monkeypatch, tiny_artifact, tmp_path):
    monkeypatch.setattr(cpu_features, "this_cpu", lambda: AMD_AVX2)
    half = ArtifactStore(tmp_path).build("half", lambda folder: save_hf_artifact(
        folder, tiny_artifact.torch_model().half(), tiny_artifact.tokenizer(), task="sst2", lineage=[],
        precision="fp16"))
    with pytest.raises(UnsupportedError, match=r"fp16 model on cpu: this CPU \(AMD EPYC\) has no AMX-FP16"):
        TorchBackend().load(half, BackendOptions(name="torch", threads=1))


def test_the_options_are_checked_when_the_suite_is_read():
    from pydantic import ValidationError

    assert TorchOptions().precision_mode == "weights"
    with pytest.raises(ValidationError):
        TorchOptions(precision_mode="mixed")
    with pytest.raises(ValidationError, match="extra"):
        TorchOptions(precison_mode="autocast")
    suite = validate_suite({"name": "p", "tasks": ["sst2"], "backends": [
        {"name": "torch", "precision": "bf16", "options": {"precision_mode": "autocast"}}]}, "p.yaml")
    assert suite.backends[0].label == "torch:cpu:default:bf16:precision_mode=autocast"
    with pytest.raises(Exception, match="precison_mode"):
        validate_suite({"name": "p", "tasks": ["sst2"], "backends": [
            {"name": "torch", "options": {"precison_mode": "autocast"}}]}, "p.yaml")
