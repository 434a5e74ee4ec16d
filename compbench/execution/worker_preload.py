"""Imported once by the fork server that job processes are forked from (see ``isolation.py``):
the heavy libraries, the built-in compressors and backends and the plugins, so that no job pays
for importing them."""

import onnxruntime  # noqa: F401
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

import compbench.execution.worker  # noqa: F401
from compbench.common.plugins import BACKENDS, COMPRESSORS

BACKENDS.load_all()
COMPRESSORS.load_all()
