"""Logit parity: the largest absolute logit difference between a backend's run of an fp32 model
and PyTorch's fp32 run of the same model on the same rows (about 1e-6 expected).

PyTorch's reference logits are computed once per (artifact, evaluation rows, length, batch size)
and kept in the cache's ``reference-logits/`` folder, so every backend of the run compares with
the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compbench.cache.layout import REFERENCE_LOGITS_DIR
from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.common.plugins import BACKENDS
from compbench.common.sealing import load_sealed_array, save_sealed_array
from compbench.config.backends import BackendOptions
from compbench.measurement.accuracy import split_logits
from compbench.models.artifact import ModelArtifact
from compbench.tasks.data import TaskData


def parity_max_abs_diff(backend: BackendOptions, artifact: ModelArtifact, data: TaskData, logits: np.ndarray,
                        store: ArtifactStore, max_seq_len: int, batch_size: int) -> float | None:
    """Max |logit difference| against PyTorch fp32 on CPU for the same fp32 model and rows
    (None for PyTorch itself, for models that are not fp32 weights and for formats PyTorch cannot load)."""
    if backend.name == "torch" or artifact.precision != "fp32":
        return None
    path = reference_path(store, artifact, data, max_seq_len, batch_size)
    expected = load_sealed_array(path)
    if expected is None:
        try:
            reference = BACKENDS.get("torch")().load(artifact, BackendOptions(name="torch"))
        except UnsupportedError:       # a format PyTorch cannot load: nothing to compare with
            return None
        try:
            rows = next(iter(data.eval.values()))
            expected, _ = split_logits(reference, artifact.tokenizer(), data, rows, max_seq_len, batch_size)
        finally:
            reference.close()
        try:
            save_sealed_array(path, expected)
        except OSError:          # a cache that cannot be written: computed again next time
            pass
    return max_abs_difference(logits, expected)


def reference_path(store: ArtifactStore, artifact: ModelArtifact, data: TaskData, max_seq_len: int,
                   batch_size: int) -> Path:
    key = stable_hash({"artifact": artifact.hash, "content": artifact.content_hash, "data": data.fingerprint,
                       "max_seq_len": max_seq_len,
                       "eval_batch_size": batch_size})
    return store.root / REFERENCE_LOGITS_DIR / f"{key}.npy"


def max_abs_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(logits, dtype=np.float64) - reference)))
