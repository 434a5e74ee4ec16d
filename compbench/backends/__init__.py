"""Backends: each loads a ``ModelArtifact`` into a ``Session`` that is scored and timed. Suites name
them through the registry in ``compbench.common.plugins`` (built-ins imported on first use,
plugins through the ``compbench.backends`` entry points); a plugin subclasses :class:`Backend`."""

from compbench.backends.base import Availability, Backend, Clock, Session
from compbench.config.backends import BackendOptions

__all__ = ["Availability", "Backend", "BackendOptions", "Clock", "Session"]
