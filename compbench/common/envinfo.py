"""What machine and software a run measured on (``env.json``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("compbench", "torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnxruntime-gpu", "onnx",
            "bitsandbytes", "numpy", "pandas", "scikit-learn", "scipy")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (None where it is not installed)."""
    return {name: _version(name) for name in names}


@lru_cache(maxsize=None)
def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def gpu_info() -> list[dict]:
    """Each GPU torch sees: name, memory, compute capability, the driver and the CUDA runtime torch uses."""
    import torch

    if not torch.cuda.is_available():
        return []
    driver = nvidia_driver_version()
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append({"index": index, "name": props.name, "memory_bytes": props.total_memory,
                        "capability": f"{props.major}.{props.minor}", "driver": driver,
                        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    return devices


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi, or None where it cannot be asked."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def collect() -> dict:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "gpus": gpu_info(),
        "onnxruntime_providers": onnxruntime_providers(),
        "packages": package_versions(),
    }
