"""llama.cpp backend (``llamacpp``): a causal LM as a GGUF file, run by llama.cpp on the CPU through
llama-cpp-python (the optional extra ``compbench[llamacpp]``; ``scripts/setup.sh --with llamacpp`` builds it).

The model is the artifact's GGUF file: a ``gguf`` artifact's own (``quantize`` method ``gguf``), or an fp32 model's
weights written as F32 once (``models.gguf_export``). Everything is measured through llama.cpp, in the tokens it
makes from the GGUF file's vocabulary (``text_tokenizer``): perplexity and zero-shot scores from its logits of every
position, the timed forward pass (the prompts decoded from an empty KV cache, logits of the last position only, as
llama.cpp processes a prompt), and ``generate``: greedy, the batch's sequences decoded together, one token each per
``llama_decode``, exactly ``max_new_tokens`` of them (an end-of-text token does not stop it: the same work every
call). Where llama.cpp's tokens differ from the Hugging Face tokenizer's on the same text, the row's bits per byte
is the figure to compare (its per-token perplexity is in other units); on SmolLM2 they are the same tokens
(checked in the tests).

``options``: ``context`` (KV cells, shared by a batch's sequences; default 2048), ``sequences`` (the most a decode
holds; default 8), ``type_k`` / ``type_v`` (the KV cache's element types: f16 by default, llama.cpp's; q8_0, q4_0
and others quantize it; a quantized V cache needs flash attention), ``flash_attention`` (auto, llama.cpp's default,
on, off). Threads are the entry's (``n_threads`` and ``n_threads_batch``). llama.cpp computes in the file's types: the
entry's precision stays fp32 (bf16 or fp16 is a GGUF type, made by ``quantize``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compbench.backends.base import Availability, Backend, Session, StepReads
from compbench.backends.llamacpp_engine import KV_TYPES, EngineSettings, GgufTokenizer, LlamaCppEngine
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact
from compbench.models.formats.gguf import FLOAT_TYPES
from compbench.models.llama_cpp import llama_cpp_module

KvType = Literal[tuple(KV_TYPES)]
INSTALL = ("install the extra: scripts/setup.sh --with llamacpp (builds llama-cpp-python from source for this CPU's "
           "AVX2 without native-only instructions, several minutes)")
LOADS = ("hf", "hf-sparse", "gguf")       # formats with a GGUF file: a gguf artifact, or fp32 weights written as F32


class LlamaCppOptions(BaseModel):
    """``options:`` of a llamacpp backend entry in a suite."""

    model_config = ConfigDict(extra="forbid")

    context: int = Field(2048, ge=64, le=131072, description="KV-cache cells, shared by a batch's sequences")
    sequences: int = Field(8, ge=1, le=64, description="the most sequences one decode holds")
    type_k: KvType = "f16"
    type_v: KvType = "f16"
    flash_attention: Literal["auto", "on", "off"] = "auto"


class LlamaCppLM:
    """The loaded model with the interface of a transformers causal LM that perplexity, zero-shot scoring and
    ``generate`` call (``Session.language_model``): ``model(input_ids=..., attention_mask=...)`` returns
    ``.logits`` (batch, tokens, vocabulary; right-padded rows), ``generate`` greedy decoding, ``config`` the model's
    with ``max_position_embeddings`` cut to what one sequence may hold here."""

    device = "cpu"

    def __init__(self, engine: LlamaCppEngine, config) -> None:
        self.engine = engine
        self.config = config

    def __call__(self, input_ids, attention_mask=None, **_: Any):
        import torch

        rows = _rows(input_ids, attention_mask)
        logits = torch.zeros((len(rows), input_ids.shape[1], self.engine.n_vocab), dtype=torch.float32)
        for i, row in enumerate(rows):     # one window at a time: a window may fill the context
            self.engine.clear()
            logits[i, :len(row)] = torch.from_numpy(self.engine.decode([row], [0], all_logits=True))
        return SimpleNamespace(logits=logits)

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 1, **_: Any):
        """Greedy decoding of every row together, exactly ``max_new_tokens`` tokens each (left-padded rows not
        taken: prompts here are unpadded)."""
        import torch

        rows = _rows(input_ids, attention_mask)
        if len({len(row) for row in rows}) != 1:
            raise UnsupportedError("llama.cpp generation here takes prompts of one length (unpadded)")
        engine = self.engine
        engine.clear()
        logits = engine.decode(rows, [0] * len(rows), all_logits=False)
        made = np.zeros((len(rows), max_new_tokens), dtype=np.int64)
        position = len(rows[0])
        for step in range(max_new_tokens):
            made[:, step] = logits.argmax(axis=1)
            if step + 1 < max_new_tokens:
                logits = engine.decode([[int(token)] for token in made[:, step]], [position] * len(rows),
                                       all_logits=False)
                position += 1
        return torch.cat([input_ids.cpu(), torch.from_numpy(made)], dim=1)


def _rows(input_ids, attention_mask) -> list[list[int]]:
    ids = input_ids.cpu().numpy()
    mask = np.ones_like(ids) if attention_mask is None else attention_mask.cpu().numpy()
    if np.any(np.diff(mask, axis=1) > 0):
        raise UnsupportedError("llama.cpp rows here are right-padded (a left-padded row has no place in its cache)")
    return [row[:int(keep.sum())].tolist() for row, keep in zip(ids, mask)]


class LlamaCppSession(Session):
    def __init__(self, engine: LlamaCppEngine, artifact: ModelArtifact, deployed, settings: LlamaCppOptions,
                 gguf_type: str) -> None:
        from transformers import AutoConfig

        self.engine = engine
        self.deployed_files = deployed
        self.settings = settings
        self.gguf_type = gguf_type
        config = AutoConfig.from_pretrained(artifact.path)
        config.max_position_embeddings = min(config.max_position_embeddings, settings.context)
        self.model = LlamaCppLM(engine, config)
        self.tokenizer = GgufTokenizer(engine)

    def prepare(self, batch: dict[str, np.ndarray]) -> list[list[int]]:
        return [row[mask.astype(bool)].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]

    def run_prepared(self, prepared: list[list[int]]) -> np.ndarray:
        self.engine.clear()
        return self.engine.decode(prepared, [0] * len(prepared), all_logits=False)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.run_prepared(self.prepare(batch))

    def language_model(self) -> LlamaCppLM:
        return self.model

    def text_tokenizer(self) -> GgufTokenizer:
        return self.tokenizer

    def step_reads(self) -> StepReads:
        """The GGUF file's tensors as stored (llama.cpp computes on them in place; Q4_0 repacked for AVX2 keeps its
        bytes), an untied token table looked up one row per sequence, and the KV cache at its types' mean bytes."""
        from compbench.models.formats.gguf import gguf_tensor_bytes

        tensors = gguf_tensor_bytes(self.deployed_files[0])
        weights = sum(tensors.values())
        rows = 0
        if "output.weight" in tensors:       # the table is only looked up; a tied one is the output, read whole
            table = tensors["token_embd.weight"]
            weights -= table
            rows = table // self.engine.n_vocab
        kv_bytes = (KV_TYPES[self.settings.type_k][1] + KV_TYPES[self.settings.type_v][1]) / 2
        kv_type = (self.settings.type_k if self.settings.type_k == self.settings.type_v
                   else f"{self.settings.type_k}/{self.settings.type_v}")
        return StepReads(weights, rows, kv_type, kv_bytes, f"GGUF tensors as stored ({self.gguf_type})")

    def runtime_info(self) -> dict:
        s = self.settings
        return {"precision": self.gguf_type, "engine": f"llama.cpp (llama-cpp-python {self.engine.version()})",
                "threads": self.engine.settings.threads, "context": s.context, "sequences": s.sequences,
                "kv_cache_types": {"k": s.type_k, "v": s.type_v}, "flash_attention": s.flash_attention,
                "cpu_features": self.engine.system_info()}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def gguf_type(artifact: ModelArtifact) -> str:
    """The GGUF type an artifact runs as: a ``gguf`` artifact's stored precision, else F32 (written from fp32)."""
    return artifact.precision if artifact.format == "gguf" else "f32"


class LlamaCppBackend(Backend):
    name = "llamacpp"
    description = "llama.cpp (GGUF) on the CPU through llama-cpp-python; causal LMs"
    Options = LlamaCppOptions

    def availability(self, options: BackendOptions) -> Availability:
        llama_cpp = llama_cpp_module()
        if llama_cpp is None:
            return Availability(False, f"llama-cpp-python is not installed: {INSTALL}")
        if options.device != "cpu":
            return Availability(False, "compbench builds llama.cpp for the CPU only (device cpu)")
        if options.precision != "fp32":
            return Availability(False, "llama.cpp computes in the GGUF file's types: keep precision fp32 and make "
                                f"a {options.precision} file with quantize method gguf")
        settings = LlamaCppOptions.model_validate(options.options)
        if settings.type_v not in FLOAT_TYPES and settings.flash_attention == "off":
            return Availability(False, f"a quantized V cache ({settings.type_v}) needs flash attention (not off)")
        return Availability(True)

    def compute_precision(self, options: BackendOptions, artifact_precision: str) -> str:
        """ggml multiplies a quantized matrix by activations quantized to 8 bits (integer dot products): its rows
        read against the int8 peak; float files against fp32's."""
        return "fp32" if artifact_precision in ("fp32", *FLOAT_TYPES) else "int8"

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        from compbench.models.gguf_export import gguf_file

        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        if not artifact.is_causal_lm:
            raise UnsupportedError("llama.cpp runs causal LMs here, not a sequence classifier")
        if artifact.format not in LOADS or (artifact.format != "gguf" and artifact.precision != "fp32"):
            raise UnsupportedError(f"llama.cpp loads a GGUF file: a {artifact.format} model at {artifact.precision} "
                                   "is not written as one here (quantize it with method gguf from the fp32 model)")
        settings = LlamaCppOptions.model_validate(options.options)
        path = gguf_file(artifact)
        engine = LlamaCppEngine(path, EngineSettings(
            threads=options.resolved_threads(), context=settings.context, sequences=settings.sequences,
            batch_tokens=settings.context, type_k=settings.type_k, type_v=settings.type_v,
            flash_attention=settings.flash_attention))
        try:
            return LlamaCppSession(engine, artifact, [path], settings, gguf_type(artifact))
        except Exception:
            engine.close()
            raise
