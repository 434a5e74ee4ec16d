"""Compressors: each takes a ``ModelArtifact`` and writes a new one. Suites name them through the
registry in ``compbench.common.plugins`` (built-ins imported on first use, plugins through the
``compbench.compressors`` entry points); a plugin subclasses :class:`Compressor`."""

from compbench.compressors.base import CompressContext, Compressor

__all__ = ["CompressContext", "Compressor"]
