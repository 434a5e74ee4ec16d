"""compbench: honest, reproducible comparisons of model-compression methods."""

__version__ = "0.1.0"
