"""Peaks per precision: a torch bf16 cell (weights cast or autocast) is read against the bf16 matmul peak, and a
CPU that only emulates bf16 or fp16 never measures a peak in it."""

from __future__ import annotations

import pytest

from compbench.backends.torch import TorchBackend
from compbench.common import cpu_features
from compbench.common.cpu_features import CpuFeatures, native_precision_problem
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.measurement.peak import emulated_peak_problem, measure_run_peak, peak_key

AMX = CpuFeatures("Intel(R) Xeon(R) Platinum 8480+", {"/proc/cpuinfo": frozenset({"amx_bf16", "amx_fp16"})})
AVX2 = CpuFeatures("AMD EPYC", {"/proc/cpuinfo": frozenset({"avx2"})})


def key_of(options: BackendOptions, artifact_precision: str = "fp32") -> tuple[str, int, str]:
    """The key the runner reads a cell's rows against (runner._measurements)."""
    return peak_key(options, TorchBackend().compute_precision(options, artifact_precision))


@pytest.mark.parametrize("mode", ["weights", "autocast"])
def test_a_torch_bf16_cell_is_read_against_the_bf16_peak(mode):
    options = BackendOptions(name="torch", precision="bf16", threads=2, options={"precision_mode": mode})
    assert key_of(options) == ("cpu", 2, "bfloat16")
    fp16 = options.model_copy(update={"precision": "fp16"})
    assert key_of(fp16) == ("cpu", 2, "float16")


def test_other_torch_cells_keep_their_peaks():
    assert key_of(BackendOptions(name="torch", threads=2)) == ("cpu", 2, "float32")
    assert key_of(BackendOptions(name="torch", threads=2, options={"compile": True})) == ("cpu", 2, "float32")
    assert key_of(BackendOptions(name="torch", threads=1), "int8-dynamic") == ("cpu", 1, "int8")
    assert key_of(BackendOptions(name="torch", device="cuda", precision="bf16", threads=1)) == ("cuda", 1, "bfloat16")


def test_an_emulated_precision_has_no_peak(monkeypatch):
    monkeypatch.setattr(cpu_features, "this_cpu", lambda: AVX2)
    for dtype, flags in (("bfloat16", "AMX-BF16 or AVX512-BF16"), ("float16", "AMX-FP16 or AVX512-FP16")):
        problem = emulated_peak_problem("cpu", dtype)
        assert problem and flags in problem and "AMD EPYC" in problem
        with pytest.raises(UnsupportedError, match=f"no {dtype} matmul peak: this CPU"):
            measure_run_peak("cpu", 1, dtype)
    assert emulated_peak_problem("cpu", "float32") is None and emulated_peak_problem("cpu", "int8") is None
    assert emulated_peak_problem("cuda", "bfloat16") is None        # a GPU computes both


def test_a_native_precision_is_measured_like_fp32(monkeypatch):
    monkeypatch.setattr(cpu_features, "this_cpu", lambda: AMX)
    assert emulated_peak_problem("cpu", "bfloat16") is None and emulated_peak_problem("cpu", "float16") is None


def test_this_machine_measures_fp32_and_refuses_what_it_emulates():
    peak = measure_run_peak("cpu", 1, "float32")
    assert peak.dtype == "float32" and peak.gflops > 0
    problem = native_precision_problem("bf16")
    if problem is None:
        assert measure_run_peak("cpu", 1, "bfloat16").gflops > 0
    else:                    # this AMD EPYC, AVX2 only
        with pytest.raises(UnsupportedError, match="AMX-BF16 or AVX512-BF16"):
            measure_run_peak("cpu", 1, "bfloat16")
