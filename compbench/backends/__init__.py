"""Backends: importing this package registers the built-ins."""

from compbench.backends import onnxruntime as _onnxruntime  # noqa: F401  (registers "onnxruntime")
from compbench.backends import torch as _torch  # noqa: F401  (registers "torch")
from compbench.backends.base import BACKENDS, PROFILES, Availability, Backend, BackendOptions, Session

__all__ = ["BACKENDS", "PROFILES", "Availability", "Backend", "BackendOptions", "Session"]
