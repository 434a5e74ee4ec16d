"""llama.cpp driven through llama-cpp-python's bindings of its C API (``llama_cpp.llama_*``), as llama.cpp's own
examples drive it: one model, one context whose KV cache (``context`` cells, unified: shared by the sequences of a
batch) holds each sequence under its own id, and ``llama_decode`` of a batch that holds every sequence's next
tokens. llama-cpp-python's ``Llama`` class is not used: it decodes one sequence at a time and keeps logits of every
position in Python.

- :class:`LlamaCppEngine`: load, ``decode`` (sequences from position 0, or one token each onward), logits of every
  position or of the last, ``clear``.
- :class:`GgufTokenizer`: llama.cpp's tokenizer of the GGUF file with the interface the language-model code calls
  (``tokenizer(text).input_ids``, character offsets, special ids), so a llama.cpp session is scored and prompted in
  the tokens llama.cpp itself makes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compbench.common.errors import UnsupportedError
from compbench.models.llama_cpp import llama_cpp_module

# KV-cache element types a context takes (ggml type ids) and their bytes per value (a block's bytes / its values)
KV_TYPES = {"f32": (0, 4.0), "f16": (1, 2.0), "bf16": (30, 2.0), "q8_0": (8, 34 / 32), "q5_1": (7, 24 / 32),
            "q5_0": (6, 22 / 32), "q4_1": (3, 20 / 32), "q4_0": (2, 18 / 32)}
FLASH_ATTENTION = {"auto": -1, "off": 0, "on": 1}

@dataclass(frozen=True)
class EngineSettings:
    threads: int
    context: int             # KV cells, shared by all sequences
    sequences: int           # the most sequences one decode holds
    batch_tokens: int        # the most tokens one decode takes (llama.cpp's n_batch)
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attention: str = "auto"


class LlamaCppEngine:
    def __init__(self, path: Path, settings: EngineSettings) -> None:
        llama_cpp = llama_cpp_module()
        if llama_cpp is None:
            raise UnsupportedError("llama-cpp-python is not installed")
        self.ll, self.settings = llama_cpp, settings
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise UnsupportedError(f"llama.cpp {self.version()} cannot load {path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch = settings.context, settings.batch_tokens
        params.n_ubatch = min(512, settings.batch_tokens)
        params.n_seq_max = settings.sequences
        params.n_threads = params.n_threads_batch = settings.threads
        params.type_k, params.type_v = KV_TYPES[settings.type_k][0], KV_TYPES[settings.type_v][0]
        params.flash_attn_type = FLASH_ATTENTION[settings.flash_attention]
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise UnsupportedError(f"llama.cpp cannot make a context with {settings} (a quantized V cache needs "
                                   "flash attention)")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(settings.batch_tokens, 0, settings.sequences)

    def version(self) -> str:
        return getattr(self.ll, "__version__", "?")

    def clear(self) -> None:
        """Empty the KV cache: the next decode starts every sequence afresh."""
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[list[int]], start: list[int], all_logits: bool) -> np.ndarray:
        """Decode ``tokens[i]`` as sequence ``i`` from position ``start[i]`` in one batch; returns the logits of every
        position, concatenated in order (``all_logits``), else of each sequence's last: (outputs, vocabulary)."""
        total = sum(len(row) for row in tokens)
        if len(tokens) > self.settings.sequences or total > self.settings.batch_tokens:
            raise ValueError(f"a decode of {len(tokens)} sequences and {total} tokens exceeds the context's "
                             f"{self.settings.sequences} sequences and {self.settings.batch_tokens} tokens")
        batch, n = self.batch, 0
        for seq, (row, first) in enumerate(zip(tokens, start)):
            for i, token in enumerate(row):
                batch.token[n] = token
                batch.pos[n] = first + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = all_logits or i == len(row) - 1
                n += 1
        batch.n_tokens = n
        status = self.ll.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} (1: no KV cells left for the batch; the context has "
                               f"{self.settings.context})")
        outputs = total if all_logits else len(tokens)
        pointer = self.ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(outputs, self.n_vocab)).copy()

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        out = (self.ll.llama_token * capacity)()
        count = self.ll.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, True)
        if count < 0:
            raise ValueError(f"llama_tokenize needed {-count} tokens for a text of {len(data)} bytes")
        return list(out[:count])

    def piece(self, token: int) -> bytes:
        """The bytes of ``token``'s text (a special token's are none)."""
        buffer = ctypes.create_string_buffer(64)
        size = self.ll.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = self.ll.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:size]

    def special(self, name: str) -> int | None:
        token = getattr(self.ll, f"llama_vocab_{name}")(self.vocab)
        return None if token < 0 else int(token)

    def adds_bos(self) -> bool:
        return bool(self.ll.llama_vocab_get_add_bos(self.vocab))

    def system_info(self) -> str:
        return self.ll.llama_print_system_info().decode(errors="replace").strip()

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.ll.llama_batch_free(self.batch)
            self.ll.llama_free(self.ctx)
            self.ll.llama_model_free(self.model)
            self.ctx = self.model = None


class Encoding(dict):
    """What a Hugging Face tokenizer call returns, as far as the language-model code reads it."""

    @property
    def input_ids(self) -> list[int]:
        return self["input_ids"]


class GgufTokenizer:
    """llama.cpp's tokenizer of the loaded GGUF file (see the module docstring). ``offset_mapping`` gives each
    token's character span from its bytes, so bits per byte counts the same bytes as for a Hugging Face tokenizer."""

    is_fast = True          # it gives offsets

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine
        self.bos_token_id = engine.special("bos")
        self.eos_token_id = engine.special("eos")
        self.pad_token_id = engine.special("pad")
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> Encoding:
        ids = self.engine.tokenize(text, add_special_tokens)
        encoding = Encoding(input_ids=ids, attention_mask=[1] * len(ids))
        if return_offsets_mapping:
            encoding["offset_mapping"] = self.offsets(text, ids)
        return encoding

    def offsets(self, text: str, ids: list[int]) -> list[tuple[int, int]]:
        """Each token's (start, end) in characters of ``text``, from the byte lengths of the tokens' pieces (a byte
        inside a character counts to that character's end)."""
        char_end = np.cumsum([len(char.encode()) for char in text])       # bytes up to the end of each character
        spans, position = [], 0
        for token in ids:
            end = position + len(self.engine.piece(token))
            start_char = int(np.searchsorted(char_end, position, side="right")) if position else 0
            end_char = int(np.searchsorted(char_end, end, side="left")) + 1 if end > position else start_char
            spans.append((start_char, min(end_char, len(text))))
            position = end
        return spans

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return b"".join(self.engine.piece(int(token)) for token in ids).decode(errors="replace")
