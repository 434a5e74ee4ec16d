"""The CPU's instruction-set flags, and whether it computes bf16 or fp16 natively.

PyTorch runs a bf16 or fp16 model on any x86 CPU, but only AMX or AVX512-BF16 (bf16) and AMX-FP16 or AVX512-FP16
(fp16) have the arithmetic: elsewhere oneDNN converts to fp32 and back around every product, slower than fp32
itself, so a timing in that precision would mislead. The flags are read from Linux's ``/proc/cpuinfo`` (the
kernel lists AMX only where it enabled the tile state) and cross-checked with torch's cpuinfo
(``torch.cpu.get_capabilities``, same flag names) where torch has it: a flag counts only when every source that
could be read lists it. Where neither can be read the flags are unknown, and nothing is taken as native.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
PROC_SOURCE, TORCH_SOURCE = "/proc/cpuinfo", "torch's cpuinfo"
# precision -> the flags that compute it natively (any one of them), with their usual names
NATIVE_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "bf16": (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")),
    "fp16": (("amx_fp16", "AMX-FP16"), ("avx512_fp16", "AVX512-FP16")),
}


@dataclass(frozen=True)
class CpuFeatures:
    """A CPU's model name and the instruction-set flags each source listed (no source: flags unknown)."""

    model: str
    sources: dict[str, frozenset[str]] = field(default_factory=dict)

    def has(self, flag: str) -> bool:
        """Whether every source that could be read lists ``flag`` (False where none could)."""
        return bool(self.sources) and all(flag in flags for flags in self.sources.values())

    @property
    def flags(self) -> frozenset[str]:
        """The flags every source lists."""
        return frozenset.intersection(*self.sources.values()) if self.sources else frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def torch_flags() -> tuple[str, frozenset[str]] | None:
    """(CPU name, flags) from torch's cpuinfo, or None where this torch has no ``torch.cpu.get_capabilities``."""
    try:
        import torch

        capabilities = torch.cpu.get_capabilities()
    except (ImportError, AttributeError, RuntimeError):
        return None
    return (str(capabilities.get("cpu_name", "")),
            frozenset(name for name, value in capabilities.items() if value is True))


def read_cpu_features(cpuinfo: Path = CPUINFO, with_torch: bool = True) -> CpuFeatures:
    """This machine's CPU: ``/proc/cpuinfo`` where there is one (Linux), torch's cpuinfo beside it."""
    sources: dict[str, frozenset[str]] = {}
    model = ""
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
        if flags:
            sources[PROC_SOURCE] = flags
    except OSError:
        pass
    seen_by_torch = torch_flags() if with_torch else None
    if seen_by_torch is not None and seen_by_torch[1]:
        model = model or seen_by_torch[0]
        sources[TORCH_SOURCE] = seen_by_torch[1]
    return CpuFeatures(model or platform.processor() or platform.machine() or "unknown CPU", sources)


@lru_cache(maxsize=1)
def this_cpu() -> CpuFeatures:
    return read_cpu_features()


def native_precision_problem(precision: str, cpu: CpuFeatures | None = None) -> str | None:
    """Why ``cpu`` (default: this machine's) does not compute ``precision`` natively, in one line; None where it
    does, and for precisions every CPU computes (fp32)."""
    if precision not in NATIVE_FLAGS:
        return None
    cpu = cpu or this_cpu()
    wanted = NATIVE_FLAGS[precision]
    if any(cpu.has(flag) for flag, _ in wanted):
        return None
    names = " or ".join(name for _, name in wanted)
    emulated = f"PyTorch would emulate {precision}, slower than fp32, and its timings would mislead"
    if not cpu.sources:
        return (f"this CPU's instruction-set flags could not be read ({platform.system()}: no {CPUINFO}, no torch "
                f"cpuinfo), so {names} cannot be confirmed: {emulated} if it lacks them")
    disagree = [flag for flag, _ in wanted if any(flag in flags for flags in cpu.sources.values())]
    if disagree:
        said = {source: sorted(set(disagree) & flags) for source, flags in cpu.sources.items()}
        listing = "; ".join(f"{source} lists {', '.join(flags) or 'neither'}" for source, flags in said.items())
        return f"this CPU ({cpu.model}) has no {names} that every source confirms ({listing}): {emulated}"
    return f"this CPU ({cpu.model}) has no {names}: {emulated}"
