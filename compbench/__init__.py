"""compbench: honest, reproducible comparisons of model-compression methods."""

from compbench.common import torchao_hidden

__version__ = "0.1.0"

torchao_hidden.install()
