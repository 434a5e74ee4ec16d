"""Imported once by the fork server that job processes are forked from (see ``worker.py``):
the heavy libraries and the plugins, so that no job pays for importing them."""

import onnxruntime  # noqa: F401
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

import compbench.worker  # noqa: F401
from compbench.backends import BACKENDS
from compbench.compressors import COMPRESSORS

BACKENDS.names()
COMPRESSORS.names()
