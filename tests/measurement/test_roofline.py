"""The roofline: matmul peak measurement (measurement.peak), FlopCounterMode-based model FLOPs (measurement.flops),
derived rates."""

from __future__ import annotations

import json
import time

import pytest
import torch

from compbench.measurement.flops import bert_dummy_inputs, bert_flops_per_example, forward_flops
from compbench.measurement.peak import MatmulPeak, measure_matmul_peak
from compbench.results.analysis import achieved_gflops, percent_of_peak

H, FFN, LAYERS, HEADS, LABELS = 32, 64, 2, 4, 2


def make_tiny_bert(**config_kwargs):
    """A randomly initialised 2-layer BERT classifier; SDPA attention unless told otherwise."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=64, num_labels=LABELS, **config_kwargs)
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def tiny_bert():
    """The tiny BERT as transformers builds it by default (SDPA attention)."""
    return make_tiny_bert()


def analytic_bert_flops(s: int, h: int = H, i: int = FFN, layers: int = LAYERS, c: int = LABELS) -> int:
    """FLOPs (2 per MAC, matrix products only) of a BERT classifier forward on one sequence of ``s`` tokens.

    Biases, softmax, GELU, layer norms and embedding lookups are not counted by FlopCounterMode
    (addmm counts only its product), so they are absent here too.
    """
    per_layer = (4 * 2 * s * h * h        # Q, K, V, O projections
                 + 2 * 2 * s * h * i      # FFN up and down
                 + 2 * s * s * h          # attention scores Q K^T, all heads
                 + 2 * s * s * h)         # context P V, all heads
    return layers * per_layer + 2 * h * h + 2 * h * c   # pooler (first token) + classifier


def test_matmul_peak_cpu_restores_threads_and_round_trips():
    before = torch.get_num_threads()
    peak = measure_matmul_peak("cpu", threads=1, sizes=(256, 512), min_seconds=0.1)
    assert torch.get_num_threads() == before
    assert peak.device == "cpu" and peak.threads == 1 and peak.dtype == "float32"
    assert peak.size in (256, 512)
    assert 0.5 < peak.gflops < 1000, peak
    assert peak.matmul_precision is None
    payload = json.loads(json.dumps(peak.to_json()))
    assert MatmulPeak.from_json(payload) == peak


def test_the_peak_is_the_best_of_its_trials_with_their_spread(monkeypatch):
    """A fake kernel whose calls take 20, 10 and 40 ms in the first, second and third trial (one product is built
    per trial and size): the peak is the second trial's rate, and the spread (max - min) / max of the trials is
    1 - 10/40 = 0.75; the report's peak line says both."""
    import compbench.measurement.peak as peak_module
    from compbench.results.report import machine_lines

    sleeps = iter((0.020, 0.010, 0.040))

    def fake(n, device, dtype, generator):
        seconds = next(sleeps)
        return lambda: time.sleep(seconds)

    monkeypatch.setitem(peak_module.PRODUCTS, "fake", fake)
    monkeypatch.setattr(peak_module, "_kernels", lambda device, dtype: ["fake"])
    peak = measure_matmul_peak("cpu", threads=1, sizes=(64,), min_seconds=0.0, warmup=0, trials=3)
    flop = 2 * 64**3 / 1e9
    expected = [flop / 0.020, flop / 0.010, flop / 0.040]       # GFLOP/s of each trial (sleep overshoots a little)
    assert peak.trials == pytest.approx(expected, rel=0.2)
    assert peak.gflops == max(peak.trials) == peak.trials[1]
    assert peak.spread == pytest.approx((max(peak.trials) - min(peak.trials)) / max(peak.trials))
    assert peak.spread == pytest.approx(0.75, abs=0.1)
    assert MatmulPeak.from_json(json.loads(json.dumps(peak.to_json()))) == peak
    line = " ".join(machine_lines({}, [{"roofline_peak": peak.to_json()}]))
    assert f"cpu 1 thread(s) float32: {peak.gflops:.1f} GFLOP/s (n=64; best of 3 trials, spread " \
           f"{100 * peak.spread:.0f}%)" in line


def test_a_peak_recorded_before_trials_still_reads():
    old = {"device": "cpu", "threads": 2, "dtype": "int8", "size": 512, "gflops": 2825.0, "matmul_precision": None}
    peak = MatmulPeak.from_json(old)
    assert peak.trials is None and peak.spread is None
    from compbench.results.report import machine_lines

    assert "int8: 2825.0 GFLOP/s (n=512)." in " ".join(machine_lines({}, [{"roofline_peak": old}]))


def test_matmul_peak_restores_threads_after_error(monkeypatch):
    import compbench.measurement.peak as peak_module

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    before = torch.get_num_threads()
    monkeypatch.setattr(peak_module, "_fastest_call", boom)
    with pytest.raises(RuntimeError, match="boom"):
        measure_matmul_peak("cpu", threads=before + 1, sizes=(64,))
    assert torch.get_num_threads() == before


def test_matmul_peak_bfloat16_cpu_runs():
    peak = measure_matmul_peak("cpu", threads=1, dtype="bfloat16", sizes=(128,), min_seconds=0.02, warmup=1)
    assert peak.dtype == "bfloat16" and peak.size == 128 and peak.gflops > 0


def test_from_json_missing_field():
    with pytest.raises(ValueError, match="missing field.*gflops"):
        MatmulPeak.from_json({"device": "cpu", "threads": 1, "dtype": "float32", "size": 8})


def test_dtype_validation():
    with pytest.raises(ValueError) as info:
        measure_matmul_peak("cpu", dtype="float64", sizes=(8,))
    message = str(info.value)
    assert "'float64'" in message
    for name in ("'float32'", "'float16'", "'bfloat16'"):
        assert name in message


def test_device_validation():
    with pytest.raises(ValueError, match="unsupported device 'meta'"):
        measure_matmul_peak("meta", sizes=(8,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_raises():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        measure_matmul_peak("cuda", sizes=(8,))


def test_forward_flops_linear():
    # addmm counts its matrix product only: the bias add is not counted.
    layer = torch.nn.Linear(64, 32)
    assert forward_flops(layer, {"input": torch.randn(8, 64)}) == 2 * 8 * 64 * 32


def test_forward_flops_counts_cpu_sdpa():
    # On CPU SDPA dispatches to aten._scaled_dot_product_flash_attention_for_cpu, which plain
    # FlopCounterMode (torch <= 2.13) counts as 0; forward_flops counts it.
    class Attention(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    b, heads, s, d = 2, 3, 16, 8
    assert forward_flops(Attention(), {"q": torch.randn(b, heads, s, d)}) == 2 * (2 * b * heads * s * s * d)


def test_forward_flops_restores_training_flag():
    layer = torch.nn.Linear(4, 4).train()
    forward_flops(layer, {"input": torch.randn(1, 4)})
    assert layer.training


def test_bert_flops_match_analytic(tiny_bert):
    assert tiny_bert.config._attn_implementation == "sdpa"
    for seq_len in (8, 16, 33):
        assert bert_flops_per_example(tiny_bert, seq_len) == analytic_bert_flops(seq_len), seq_len


def test_bert_flops_attention_is_counted_on_both_paths(tiny_bert):
    # SDPA: the fused CPU kernel (added to the counter by forward_flops); eager: plain bmm, which
    # FlopCounterMode counts natively. Both must give the analytic attention FLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    from compbench.measurement.flops import _missing_attention_formulas

    s = 16
    attention = LAYERS * 2 * (2 * s * s * H)
    eager = make_tiny_bert(attn_implementation="eager").eval()
    assert eager.config._attn_implementation == "eager"
    for model, op in ((tiny_bert.eval(), "_scaled_dot_product_flash_attention_for_cpu"), (eager, "bmm")):
        counter = FlopCounterMode(display=False, custom_mapping=_missing_attention_formulas())
        with torch.no_grad(), counter:
            model(**bert_dummy_inputs(model, s))
        counts = {str(k).removeprefix("aten."): v for k, v in counter.get_flop_counts()["Global"].items()}
        assert counts == {"addmm": analytic_bert_flops(s) - attention, op: attention}, counts
        assert bert_flops_per_example(model, s) == analytic_bert_flops(s)


def test_bert_flops_linear_in_batch(tiny_bert):
    one = forward_flops(tiny_bert, bert_dummy_inputs(tiny_bert, 16, batch_size=1))
    four = forward_flops(tiny_bert, bert_dummy_inputs(tiny_bert, 16, batch_size=4))
    assert four == 4 * one == 4 * bert_flops_per_example(tiny_bert, 16)


def test_bert_dummy_inputs_only_accepted_names():
    class NoTypes(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    inputs = bert_dummy_inputs(NoTypes(), 5, batch_size=2)
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape == (2, 5) and bool((inputs["attention_mask"] == 1).all())


def test_derived_numbers():
    assert achieved_gflops(2e9, 0.5) == pytest.approx(4.0)
    assert percent_of_peak(4.0, 16.0) == pytest.approx(25.0)
    assert achieved_gflops(None, 1.0) is None
    assert achieved_gflops(1e9, None) is None
    assert achieved_gflops(1e9, 0.0) is None
    assert achieved_gflops(1e9, -1.0) is None
    assert percent_of_peak(None, 10.0) is None
    assert percent_of_peak(1.0, None) is None
    assert percent_of_peak(1.0, 0.0) is None


def test_int8_peak_is_the_fastest_int8_kernel_dynamic_int8_models_run():
    """On an AVX2-only CPU torch._int_mm is ~100x slower than fbgemm, which dynamic-INT8 Linear layers
    run: a roof from _int_mm alone put int8 models at 3,000-8,000% of "peak". The roof must be at
    least the rate of fbgemm's quantized Linear measured independently here."""
    import time

    import compbench.measurement.peak as peak_module

    peak = measure_matmul_peak("cpu", threads=1, dtype="int8", sizes=(256,), min_seconds=0.05, warmup=1)
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("no fbgemm in this torch build")
    call = peak_module._fbgemm_linear(256, torch.device("cpu"), torch.int8, torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        call()
        best = min(_timed(call, time) for _ in range(5))
    finally:
        torch.set_num_threads(before)
    assert peak.gflops >= 0.7 * 2 * 256**3 / best / 1e9, peak


def _timed(call, time) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_a_gpu_peak_is_searched_up_to_sizes_that_saturate_an_h100():
    """The bug: the search stopped at 2048^3, far from an H100/H200's peak; the CPU keeps its smaller sizes."""
    from compbench.measurement.peak import peak_sizes

    assert max(peak_sizes("cuda")) >= 8192 and max(peak_sizes("cuda:1")) >= 8192
    assert max(peak_sizes("cpu")) == 2048
