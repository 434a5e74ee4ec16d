"""The machine's compute roof: the best sustained dense matrix-product rate for one device, dtype
and thread count, measured once per run and read against by every cell's achieved GFLOP/s
(``results.analysis.roofline``).

FLOP convention (that of ``FlopCounterMode``, see ``flops.py``): one multiply-accumulate is 2 FLOPs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch

from compbench.common.cpu_features import native_precision_problem
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,        # torch._int_mm or fbgemm (see _kernels): int32 accumulate
}
MIN_TIMED_CALLS = 3
# The peak is the best of this many trials, each over every size and kernel: one pass alone has read 2,825 and
# 4,474 GOP/s (int8) on the same machine in two runs; the trials' spread says how far to trust it.
PEAK_TRIALS = 3


@dataclass(frozen=True)
class MatmulPeak:
    """Best sustained dense-matmul rate measured on one device, dtype and thread count."""

    device: str        # "cpu" or "cuda" (or "cuda:0")
    threads: int       # torch intra-op threads used (CPU); torch.get_num_threads() on CUDA too
    dtype: str         # "float32", "float16", "bfloat16" or "int8" (int32 accumulate)
    size: int          # n of the n x n x n matmul that gave the best rate
    gflops: float      # 2*n^3 / fastest call's seconds at the best size, in GFLOP/s
    # CUDA float32 only: torch.get_float32_matmul_precision() in effect while measuring
    # ("highest" = true fp32; "high"/"medium" allow TF32/bf16 inner products). None otherwise.
    matmul_precision: str | None = None
    trials: tuple[float, ...] | None = None    # each trial's best GFLOP/s, in the order run; gflops is their max
    spread: float | None = None                # (max - min) / max of ``trials``: 0 when every trial agreed

    def to_json(self) -> dict:
        """Plain JSON-serialisable dict of all fields (``trials`` as a list)."""
        out = asdict(self)
        out["trials"] = None if self.trials is None else list(self.trials)
        return out

    @classmethod
    def from_json(cls, value: dict) -> MatmulPeak:
        """Inverse of :meth:`to_json`; unknown keys are ignored; ``matmul_precision``, ``trials`` and ``spread``
        are optional (a peak recorded before trials were kept has none)."""
        required = [f.name for f in fields(cls) if f.name not in OPTIONAL_FIELDS]
        missing = [name for name in required if name not in value]
        if missing:
            raise ValueError(f"MatmulPeak.from_json: missing field(s) {', '.join(missing)}")
        precision, trials, spread = (value.get(name) for name in OPTIONAL_FIELDS)
        return cls(
            device=str(value["device"]),
            threads=int(value["threads"]),
            dtype=str(value["dtype"]),
            size=int(value["size"]),
            gflops=float(value["gflops"]),
            matmul_precision=None if precision is None else str(precision),
            trials=None if trials is None else tuple(float(rate) for rate in trials),
            spread=None if spread is None else float(spread),
        )


OPTIONAL_FIELDS = ("matmul_precision", "trials", "spread")


def _resolve_dtype(dtype: str) -> torch.dtype:
    """Map a dtype name to ``torch.dtype``; ValueError listing the valid names otherwise."""
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        valid = ", ".join(repr(name) for name in DTYPES)
        raise ValueError(f"unsupported dtype {dtype!r} for measure_matmul_peak; valid: {valid}") from None


def _resolve_device(device: str) -> torch.device:
    """Parse ``device``; only CPU and CUDA are supported, and CUDA must be available."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} for measure_matmul_peak; valid: 'cpu', 'cuda', 'cuda:N'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"CUDA is not available (torch {torch.__version__}); cannot measure matmul peak on {device!r}"
        )
    return resolved


def _time_cpu_calls(fn: Callable[[], object], min_seconds: float, min_calls: int) -> list[float]:
    """Seconds of each call of a synchronous ``fn``, timed until ``min_seconds`` total and ``min_calls`` calls."""
    times: list[float] = []
    total_ns = 0
    budget_ns = int(min_seconds * 1e9)
    while len(times) < min_calls or total_ns < budget_ns:
        start = time.perf_counter_ns()
        fn()
        elapsed = time.perf_counter_ns() - start
        total_ns += elapsed
        times.append(elapsed / 1e9)
    return times


def _time_cuda_calls(fn: Callable[[], object], min_seconds: float, min_calls: int) -> list[float]:
    """Seconds of each call of an asynchronous CUDA ``fn``, from CUDA event pairs (device time).

    Calls are enqueued in rounds, each call between its own pair of events; the stream is
    synchronised before any elapsed time is read. Rounds double until the summed device time
    reaches ``min_seconds`` (and at least ``min_calls`` calls were timed).
    """
    times: list[float] = []
    round_size = min_calls
    while len(times) < min_calls or sum(times) < min_seconds:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(round_size)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times.extend(start.elapsed_time(end) / 1e3 for start, end in events)   # ms -> s
        round_size = min(round_size * 2, 4096)
    return times


def _kernels(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The matrix-product kernels timed for ``dtype``: ``torch.matmul`` for floats; for int8
    ``torch._int_mm`` and, on CPU, fbgemm's dynamic quantized Linear.

    ``torch._int_mm`` (int8 x int8 -> int32) is fast where the CPU has VNNI, but on an AVX2-only
    CPU it takes a generic path about 100x slower than fbgemm, the kernel dynamic-INT8 Linear
    layers actually run (measured on an AMD EPYC without AVX-512: 2.5 against 240 GOP/s on 2
    threads). The int8 roof is the faster of the two.
    """
    if dtype is not torch.int8:
        return ["matmul"]
    fbgemm = device.type == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines
    return ["_int_mm", *(["fbgemm"] if fbgemm else [])]


def _matmul(n: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> Callable[[], object]:
    a, b = (torch.randn(n, n, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    return lambda: torch.matmul(a, b, out=out)


def _int_mm(n: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> Callable[[], object]:
    a, b = (torch.randint(-128, 128, (n, n), generator=generator, dtype=torch.int8).to(device) for _ in range(2))
    return lambda: torch._int_mm(a, b)


def _fbgemm_linear(
    n: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator
) -> Callable[[], object]:
    """fbgemm's dynamic-INT8 Linear (what ``quantize_dynamic`` models run): activations quantized per call."""
    weight = torch.randn(n, n, generator=generator)
    packed = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(weight, float(weight.abs().max()) / 127, 0,
                                                                          torch.qint8), None)
    x = torch.randn(n, n, generator=generator)
    return lambda: torch.ops.quantized.linear_dynamic(x, packed)


# kernel name -> factory of one n x n x n product on inputs allocated once
PRODUCTS: dict[str, Callable[[int, torch.device, torch.dtype, torch.Generator], Callable[[], object]]] = {
    "matmul": _matmul, "_int_mm": _int_mm, "fbgemm": _fbgemm_linear,
}


def _product(kernel: str, n: int, device: torch.device, dtype: torch.dtype) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(n)          # local RNG: the global seed is untouched
    return PRODUCTS[kernel](n, device, dtype, generator)


def _fastest_call(call: Callable[[], object], device: torch.device, min_seconds: float, warmup: int,
                  min_calls: int = MIN_TIMED_CALLS) -> float:
    """Seconds of the fastest of at least ``min_calls`` timed calls of ``call``, after ``warmup`` untimed ones."""
    with torch.no_grad():
        for _ in range(warmup):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            times = _time_cuda_calls(call, min_seconds, min_calls)
        else:
            times = _time_cpu_calls(call, min_seconds, min_calls)
    return min(times)      # a peak: other work on the machine only ever slows a call down


def measure_matmul_peak(device: str = "cpu", threads: int | None = None, dtype: str = "float32",
                        sizes: Sequence[int] = (512, 1024, 2048), min_seconds: float = 0.3,
                        warmup: int = 2, trials: int = PEAK_TRIALS) -> MatmulPeak:
    """Best sustained dense-matmul GFLOP/s over square sizes ``sizes`` on ``device``: the best of ``trials``
    trials, each a pass over every size and kernel, recorded with each trial's best and their spread.

    In a trial, for each size ``n`` (ascending) inputs are allocated, ``warmup`` untimed calls run (one after the
    first trial), then calls are timed until at least ``min_seconds / trials`` and 3 calls over the trials (so that
    trials cost about what one pass did); the size's rate is
    ``2*n**3 / seconds of the fastest call``. A larger size is skipped when one call of it (extrapolated as
    n**3 from the last size measured) would take more than ``min_seconds``. On CPU ``threads`` (default: the current
    ``torch.get_num_threads()``) is set for the measurement and restored afterwards. On CUDA the
    time is device time from CUDA events; TF32 settings are not touched, and for float32 the
    precision in effect is recorded in ``matmul_precision``.
    """
    torch_dtype = _resolve_dtype(dtype)
    resolved = _resolve_device(device)
    ordered = sorted({int(n) for n in sizes})
    if not ordered or ordered[0] < 1:
        raise ValueError(f"sizes must be a non-empty sequence of positive ints, got {tuple(sizes)!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if min_seconds < 0 or warmup < 0:
        raise ValueError(f"min_seconds and warmup must be >= 0, got {min_seconds} and {warmup}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")

    previous_threads = torch.get_num_threads()
    on_cuda = resolved.type == "cuda"
    # CUDA: host threads do not drive the matmul; the current count is recorded as is.
    used_threads = previous_threads if threads is None or on_cuda else threads
    precision = torch.get_float32_matmul_precision() if on_cuda and torch_dtype is torch.float32 else None
    # torch.cuda.device(...) makes the index current for events/streams and restores it on exit.
    with torch.cuda.device(resolved) if on_cuda else contextlib.nullcontext():
        if not on_cuda:
            torch.set_num_threads(used_threads)
        try:
            results = [_best_rate(ordered, resolved, torch_dtype, min_seconds, warmup if trial == 0 else min(warmup, 1),
                                  trials) for trial in range(trials)]
        finally:
            if not on_cuda:
                torch.set_num_threads(previous_threads)
    rates = tuple(rate for rate, _ in results)
    best = max(results)
    return MatmulPeak(device=str(device), threads=used_threads, dtype=dtype, size=best[1],
                      gflops=best[0], matmul_precision=precision, trials=rates,
                      spread=(best[0] - min(rates)) / best[0] if best[0] > 0 else 0.0)


def _best_rate(sizes: Sequence[int], device: torch.device, dtype: torch.dtype,
               min_seconds: float, warmup: int, trials: int = 1) -> tuple[float, int]:
    """(best GFLOP/s, its n) of one trial over ascending ``sizes`` and the dtype's kernels, each size timed for
    ``min_seconds / trials``.

    For each kernel the smallest size is always measured. A larger size is skipped (with all
    after it) when one call of it, extrapolated as n**3 from the kernel's last measured size, would
    exceed ``min_seconds``: such sizes would cost several seconds and add nothing once the rate
    has saturated.
    """
    best: tuple[float, int] | None = None
    for kernel in _kernels(device, dtype):
        last: tuple[int, float] | None = None        # (n, fastest call's seconds) of the last measured size
        for n in sizes:
            if last is not None and last[1] * (n / last[0]) ** 3 > min_seconds:
                break
            seconds = _fastest_call(_product(kernel, n, device, dtype), device, min_seconds / trials, warmup,
                                    min_calls=-(-MIN_TIMED_CALLS // trials))
            rate = 2.0 * n**3 / seconds / 1e9 if seconds > 0 else 0.0
            if best is None or rate > best[0]:
                best = (rate, n)
            last = (n, seconds)
    assert best is not None
    return best


PEAK_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
# n of the n x n x n products tried: a CPU saturates by 2048; an H100/H200 needs 8192 and more to near its peak
# (the search stops early once one call would take longer than its time budget).
CPU_SIZES = (512, 1024, 2048)
CUDA_SIZES = (1024, 2048, 4096, 8192, 16384)


def peak_sizes(device: str) -> tuple[int, ...]:
    return CUDA_SIZES if device.startswith("cuda") else CPU_SIZES


def emulated_peak_problem(device: str, dtype: str) -> str | None:
    """Why a ``dtype`` matmul peak on ``device`` would time emulation, not arithmetic (None: it would not): bf16 and
    fp16 on a CPU without AMX or AVX512-BF16/FP16 (``common.cpu_features``), where ``torch.matmul`` converts to fp32
    and back around each product (on an AMD EPYC with AVX2 only: 1.2 GFLOP/s in bf16 against 100 in fp32, 2 threads).
    With AMX or AVX512-BF16/FP16, ``torch.matmul`` in bf16/fp16 runs oneDNN's kernels for them and is timed as fp32
    and int8 are. GPUs are not judged here (a CUDA device computes both)."""
    if not device.startswith("cpu"):
        return None
    precision = next((name for name, torch_name in PEAK_DTYPES.items() if torch_name == dtype), None)
    return native_precision_problem(precision) if precision else None


def measure_run_peak(device: str, threads: int, dtype: str) -> MatmulPeak:
    """The peak a run's cells at (``device``, ``threads``, ``dtype``) are read against (``peak_key``), over
    ``peak_sizes``; a precision the CPU would only emulate is refused (``UnsupportedError``: the peak job is
    skipped with the reason) rather than measured, as the cells that would run in it are skipped."""
    problem = emulated_peak_problem(device, dtype)
    if problem:
        raise UnsupportedError(f"no {dtype} matmul peak: {problem}")
    return measure_matmul_peak(device, threads, dtype, sizes=peak_sizes(device))


def peak_key(options: BackendOptions, compute_precision: str) -> tuple[str, int, str]:
    """The (device, threads, dtype) whose matmul peak a cell's achieved rate is read against: the precision its
    arithmetic runs in (``Backend.compute_precision``: an int8 model's against the int8 peak, fp16 weights or a
    bf16 backend against that precision's peak: a torch bf16 entry's, weights cast or autocast, the bfloat16
    one), fp32 otherwise."""
    precision = compute_precision.split("-")[0]
    return options.device, options.resolved_threads(), PEAK_DTYPES.get(precision, "float32")


BANDWIDTH_BYTES = 512 * 2**20     # far beyond any CPU cache: a read that streams from memory


def measure_read_bandwidth(device: str = "cpu", threads: int | None = None, n_bytes: int = BANDWIDTH_BYTES,
                           min_seconds: float = 1.0) -> dict:
    """The memory's sustained read rate (GB/s, 1e9 bytes): the fastest of repeated sums over an fp32 buffer of
    ``n_bytes`` with ``threads`` torch threads (on CUDA, device memory). Decoding a small LM reads every weight
    once per token, so bandwidth / bytes read per token is the roof its tokens/s sits under."""
    resolved = _resolve_device(device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        buffer = torch.ones(n_bytes // 4, dtype=torch.float32, device=resolved)
        fastest = _fastest_call(lambda: buffer.sum(), resolved, min_seconds, warmup=2)
    finally:
        torch.set_num_threads(before)
    return {"device": device, "threads": threads if threads is not None else before, "bytes": int(buffer.numel() * 4),
            "gbs": buffer.numel() * 4 / fastest / 1e9}
