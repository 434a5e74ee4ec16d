"""Compressors: built-ins register here; plugins through the ``compbench.compressors`` entry points."""

from compbench.compressors.base import COMPRESSORS, CompressContext, Compressor

__all__ = ["COMPRESSORS", "CompressContext", "Compressor"]
