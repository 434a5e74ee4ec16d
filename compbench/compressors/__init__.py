"""Compressors: built-ins register here; plugins through the ``compbench.compressors`` entry points."""

from compbench.compressors import distill as _distill  # noqa: F401  (registers "distill")
from compbench.compressors import prune as _prune  # noqa: F401  (registers "prune")
from compbench.compressors import quantize as _quantize  # noqa: F401  (registers "quantize")
from compbench.compressors import svd as _svd  # noqa: F401  (registers "svd")
from compbench.compressors.base import COMPRESSORS, CompressContext, Compressor

__all__ = ["COMPRESSORS", "CompressContext", "Compressor"]
