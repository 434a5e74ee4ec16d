"""How a backend runs a model: one entry of the suite's ``backends:`` list, and the named profiles."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from compbench.common.envinfo import usable_cores
from compbench.common.fields import bounded_int
from compbench.config.limits import MAX_THREADS

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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="registered backend name, e.g. torch")
    device: Device = "cpu"
    profile: str = "default"
    threads: bounded_int(1, MAX_THREADS) | None = Field(
        None, description="intra-op threads; default: the profile's, else all cores"
    )
    precision: Precision = "fp32"
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend-specific settings (see the backend's Options)"
    )

    def resolved_threads(self) -> int:
        profile_threads = PROFILES.get(self.profile, {}).get("threads")
        return self.threads or profile_threads or usable_cores()

    @property
    def label(self) -> str:
        """Unique within a suite: ``torch:cpu:default``, with non-default settings appended."""
        return self._label(self.precision)

    @property
    def fp32_label(self) -> str:
        """The label of this entry at fp32: the backend whose teacher a reduced-precision row is compared with."""
        return self._label("fp32")

    def _label(self, precision: str) -> str:
        parts = [self.name, self.device, self.profile]
        if precision != "fp32":
            parts.append(precision)
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        parts += [f"{key}={value}" for key, value in sorted(self.options.items())]
        return ":".join(parts)
