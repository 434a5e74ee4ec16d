"""The backend interface: load a ``ModelArtifact`` into a ready-to-run ``Session``.

A backend entry's settings (``BackendOptions``: device, profile, threads, precision, options)
are the suite's (``compbench.config.backends``); a backend's own ``options:`` are validated by its
``Options`` model.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def with_token_types(batch: dict[str, np.ndarray], input_names) -> dict[str, np.ndarray]:
    """``batch`` with ``token_type_ids`` of zeros where the graph takes them and the tokenizer gave none (RoBERTa's),
    as PyTorch defaults them; exported graphs (ONNX, OpenVINO IR) cannot default an input."""
    if "token_type_ids" in input_names and "token_type_ids" not in batch:
        return {**batch, "token_type_ids": np.zeros_like(batch["input_ids"])}
    return batch


@dataclass(frozen=True)
class StepReads:
    """What one decoding step of a causal LM reads from memory, as the session holds it (runtime dtypes, not the
    files'): ``weight_bytes``, the tensors a step reads whole (every matrix; a tied LM head reads the whole
    embedding table); ``row_bytes``, one row of each table a step only looks up (an untied input embedding), read
    once per sequence; the KV cache's element type (``kv_dtype``) and ``kv_bytes_per_value``; ``counted``: what
    was counted (for the row, so a reader knows where the number comes from)."""

    weight_bytes: int
    row_bytes: int
    kv_dtype: str
    kv_bytes_per_value: float
    counted: str


class Clock:
    """Times one call in ms on the host: right for work that is finished when the call returns."""

    def time_ms(self, call: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - start) / 1e6


class Session(ABC):
    """One loaded model. ``run`` returns logits once the work is finished on the device.

    ``deployed_files`` are the files this session loaded: their bytes are the size as deployed.

    Timing goes through ``prepare`` / ``run_prepared`` / ``clock``: ``prepare`` puts a batch where
    the model reads it (on the GPU for a CUDA session), so the latency loop times compute only;
    ``transfer_ms`` times that host-to-device copy apart; ``clock`` is the session's honest
    timer (CUDA events for asynchronous work). CPU sessions keep the defaults.
    """

    deployed_files: list[Path]

    @abstractmethod
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, num_labels) as float32 numpy."""

    def prepare(self, batch: dict[str, np.ndarray]) -> Any:
        """The batch as ``run_prepared`` takes it (already on the device)."""
        return batch

    def run_prepared(self, prepared: Any) -> None:
        """One inference on a prepared batch; it may return before the device has finished."""
        self.run(prepared)

    def clock(self) -> Clock:
        return Clock()

    def transfer_ms(self, batch: dict[str, np.ndarray]) -> float | None:
        """ms to copy ``batch`` from host memory to the device; None where the model reads host memory."""
        return None

    def reset_memory_peak(self) -> None:
        """Start counting peak device memory afresh (no-op without a device allocator to ask)."""

    def memory_peak(self) -> dict | None:
        """Peak device memory since ``reset_memory_peak``: ``{"allocated_bytes", "reserved_bytes"}``, or None."""
        return None

    def language_model(self) -> Any:
        """For a causal LM: the loaded model as transformers' interface has it: called with ``input_ids`` and
        ``attention_mask`` (torch tensors; ``use_cache=False``) it returns an output whose ``.logits`` are
        (batch, tokens, vocabulary); ``generate(...)`` decodes as ``GenerationMixin.generate`` does; ``.config`` is
        the model's config. Perplexity, zero-shot scoring and generation timing all run through it."""
        raise UnsupportedError(f"{type(self).__name__} does not run causal language models")

    def text_tokenizer(self) -> Any | None:
        """A tokenizer of the engine's own that prompts and scoring must use instead of the artifact's (llama.cpp's,
        from the GGUF file), with the calls ``language_model``'s callers make; None: the artifact's."""
        return None

    def step_reads(self) -> StepReads | None:
        """For a causal LM: the bytes one decoding step reads (``StepReads``), the denominator of its bandwidth
        roof; None where the backend cannot tell (no roof is drawn)."""
        return None

    def runtime_info(self) -> dict:
        """What actually ran, read back from the engine where it can change it silently: ``precision`` (the float
        precision computed in, e.g. OpenVINO's bf16 on an AMX CPU for an fp32 model; a quantized model's stored
        precision) and any engine-specific settings worth a row key (e.g. a compile's mode and seconds). Empty:
        the backend entry's and the artifact's precisions say it."""
        return {}

    def close(self) -> None:
        """Release what the session holds."""


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions   # validates BackendOptions.options

    @abstractmethod
    def availability(self, options: BackendOptions) -> Availability:
        """Whether these options can run on this machine, and why not."""

    def compute_precision(self, options: BackendOptions, artifact_precision: str) -> str:
        """The precision a model stored at ``artifact_precision`` computes in on this backend with ``options`` (what
        its roofline peak is measured in), known before it is loaded: the stored precision of a quantized model,
        else the entry's. A backend whose engine picks its own precision says which it will pick."""
        return artifact_precision if artifact_precision != "fp32" else options.precision

    @abstractmethod
    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        """A session ready to time; raise UnsupportedError for what cannot run here."""

