"""The backend interface: load a ``ModelArtifact`` into a ready-to-run ``Session``."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compbench.artifact import ModelArtifact
from compbench.registry import Registry

Device = Literal["cpu", "cuda"]
DEVICES = get_args(Device)
Precision = Literal["fp32", "fp16", "bf16"]

# Named profiles: settings that stand for a deployment target.
PROFILES: dict[str, dict] = {
    "default": {},
    "edge": {"threads": 1},   # a single-core edge device
}


class BackendOptions(BaseModel):
    """How a backend runs a model; one entry of the suite's ``backends:`` list."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered backend name, e.g. torch")
    device: Device = "cpu"
    profile: str = "default"
    threads: int | None = Field(None, ge=1, description="intra-op threads; default: the profile's, else all cores")
    precision: Precision = "fp32"
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific settings (see the backend's Options)")

    def resolved_threads(self) -> int:
        profile_threads = PROFILES.get(self.profile, {}).get("threads")
        return self.threads or profile_threads or (os.cpu_count() or 1)

    @property
    def label(self) -> str:
        """Unique within a suite: ``torch:cpu:default``, with non-default settings appended."""
        parts = [self.name, self.device, self.profile]
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        parts += [f"{key}={value}" for key, value in sorted(self.options.items())]
        return ":".join(parts)


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Clock:
    """Times one call in ms on the host: right for work that is finished when the call returns."""

    def time_ms(self, call: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - start) / 1e6


class Session(ABC):
    """One loaded model. ``run`` returns logits once the work is finished on the device.

    ``deployed_files`` are the files this session loaded: their bytes are the size as deployed.

    Timing goes through ``prepare`` / ``run_prepared`` / ``clock``: ``prepare`` puts a batch where
    the model reads it (on the GPU for a CUDA session), so the latency loop times compute only;
    ``transfer_ms`` times that host-to-device copy apart; ``clock`` is the session's honest
    timer (CUDA events for asynchronous work). CPU sessions keep the defaults.
    """

    deployed_files: list[Path]

    @abstractmethod
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, num_labels) as float32 numpy."""

    def prepare(self, batch: dict[str, np.ndarray]) -> Any:
        """The batch as ``run_prepared`` takes it (already on the device)."""
        return batch

    def run_prepared(self, prepared: Any) -> None:
        """One inference on a prepared batch; it may return before the device has finished."""
        self.run(prepared)

    def clock(self) -> Clock:
        return Clock()

    def transfer_ms(self, batch: dict[str, np.ndarray]) -> float | None:
        """ms to copy ``batch`` from host memory to the device; None where the model reads host memory."""
        return None

    def reset_memory_peak(self) -> None:
        """Start counting peak device memory afresh (no-op without a device allocator to ask)."""

    def memory_peak(self) -> dict | None:
        """Peak device memory since ``reset_memory_peak``: ``{"allocated_bytes", "reserved_bytes"}``, or None."""
        return None

    def close(self) -> None:
        """Release what the session holds."""


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions   # validates BackendOptions.options

    @abstractmethod
    def availability(self, options: BackendOptions) -> Availability:
        """Whether these options can run on this machine, and why not."""

    @abstractmethod
    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        """A session ready to time; raise UnsupportedError for what cannot run here."""


BACKENDS: Registry[Backend] = Registry("backend", "compbench.backends", base=Backend)
