"""An artifact as a full-precision GGUF file (llama.cpp's format), written with the ``gguf`` package's writer from
the model as PyTorch loads it, once per writer version and cached beside the artifact, outside its seal, as ONNX
exports are. ``quantize`` method ``gguf`` starts from this file (``compressors.quantize.llamacpp``); the
``llamacpp`` backend loads it for a model stored in another format (the baseline: its fp32 weights as ``F32``).

What is written follows llama.cpp's ``convert_hf_to_gguf.py`` for the Llama architecture (SmolLM2's):

- the hyper-parameters from the config (``llama.*``: blocks, widths, heads, KV heads, RoPE base and dimensions,
  RMS-norm epsilon, context length, vocabulary size);
- each tensor under its GGUF name (``gguf.TensorNameMap``), the query and key projections' rows permuted from
  Hugging Face's rotary layout (halves) to llama.cpp's (interleaved pairs); 1-D tensors (norms) in F32, matrices
  in ``F32``, ``F16`` or ``BF16``; a tied ``lm_head`` is not written (llama.cpp reads ``token_embd`` as the output
  then);
- a byte-level BPE vocabulary (``tokenizer.ggml.model = gpt2``) from the artifact's tokenizer: tokens by id, their
  types (control for special tokens), merges, the special ids, whether a begin-of-text token is added, the chat
  template, and the pre-tokenizer's llama.cpp name read from the tokenizer's own pipeline (``smollm``: digits one
  by one, then GPT-2's byte-level split; ``gpt2``: the byte-level split alone). Another architecture or tokenizer
  is refused with the reason: llama.cpp's own converter knows many more.

That llama.cpp tokenizes as the artifact's tokenizer does and computes the same logits is checked in the tests
(``tests/backends/test_llamacpp.py``), not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compbench.common.envinfo import package_versions
from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.models.formats.base import GGUF_EXPORTS, cached_export
from compbench.models.formats.gguf import FLOAT_TYPES, GGUF_FILE

# Bump when what the writer writes changes: exports of another version are written again.
WRITER_VERSION = 1
WRITER_LIBRARIES = ("gguf", "torch", "transformers")
ARCHITECTURES = {"llama": "LLAMA"}          # Hugging Face model_type -> gguf.MODEL_ARCH member


def gguf_file(artifact) -> Path:
    """``artifact`` as a GGUF file: its own for a ``gguf`` artifact, else its fp32 weights written as F32 once."""
    if artifact.format == "gguf":
        return artifact.path / GGUF_FILE
    key = stable_hash({"writer": WRITER_VERSION, **package_versions(WRITER_LIBRARIES)}, length=12)
    target = artifact.path / GGUF_EXPORTS / key
    return cached_export(target, lambda folder: write_gguf(artifact, folder / GGUF_FILE, "f32")) / GGUF_FILE


def write_gguf(artifact, path: Path, dtype: str = "f32") -> str:
    """Write ``artifact`` (a causal LM PyTorch loads in fp32) to ``path`` with matrices in ``dtype``; returns what
    wrote it (for the export's record)."""
    import gguf
    import torch

    if dtype not in FLOAT_TYPES:
        raise ValueError(f"dtype {dtype!r}: give one of {', '.join(FLOAT_TYPES)}")
    model = artifact.torch_model().eval()
    config = model.config
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        raise UnsupportedError(f"compbench writes GGUF for {', '.join(ARCHITECTURES)} models, not "
                               f"{config.model_type}: convert it with llama.cpp's convert_hf_to_gguf.py")
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch]])
    _hyper_parameters(writer, config, dtype)
    _vocabulary(writer, artifact.tokenizer(), config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
                continue
            target = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise UnsupportedError(f"the GGUF writer has no llama.cpp name for the tensor {name}")
            values = tensor.detach().float().cpu().numpy()
            if name.endswith("self_attn.q_proj.weight"):
                values = rotary_rows(values, heads)
            elif name.endswith("self_attn.k_proj.weight"):
                values = rotary_rows(values, kv_heads)
            _add_tensor(writer, gguf, target, values, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return f"compbench GGUF writer {WRITER_VERSION} (gguf {package_versions(('gguf',))['gguf']}), {dtype.upper()}"


def rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """A query/key projection's rows from Hugging Face's rotary layout (each head's first half of dimensions, then
    its second) to llama.cpp's (pairs interleaved), as ``convert_hf_to_gguf.py``'s ``LlamaModel.permute`` does."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _add_tensor(writer, gguf, name: str, values: np.ndarray, dtype: str) -> None:
    if values.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, values.astype(np.float32))
    elif dtype == "f16":
        writer.add_tensor(name, values.astype(np.float16))
    else:
        kind = gguf.GGMLQuantizationType.BF16
        writer.add_tensor(name, gguf.quants.quantize(values.astype(np.float32), kind), raw_dtype=kind)


def _hyper_parameters(writer, config, dtype: str) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(str(getattr(config, "_name_or_path", "") or config.model_type))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if getattr(config, "rope_scaling", None):
        raise UnsupportedError("the GGUF writer does not write RoPE scaling; convert the model with llama.cpp's "
                               "convert_hf_to_gguf.py")
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16}
    writer.add_file_type(file_types[dtype])


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (see the module docstring); another is refused."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(step.get("type"), step.get("individual_digits")) for step in steps]
    if kinds == [("ByteLevel", None)]:
        return "gpt2"
    if kinds == [("Digits", True), ("ByteLevel", None)]:
        return "smollm"
    raise UnsupportedError(f"the GGUF writer knows byte-level BPE pre-tokenizers only, not {kinds}: convert the "
                           "model with llama.cpp's convert_hf_to_gguf.py")


def _vocabulary(writer, tokenizer, config) -> None:
    import gguf

    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedError("the GGUF writer reads a fast (tokenizer.json) tokenizer")
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedError(f"the GGUF writer writes byte-level BPE vocabularies, not {model.get('type')}")
    pre = pre_tokenizer_name(tokenizer_json)
    vocab = tokenizer.get_vocab()
    size = max(config.vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    special = set(tokenizer.all_special_ids) | {int(i) for i, token in tokenizer.added_tokens_decoder.items()
                                                if token.special}
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                       ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
        if value is not None:
            getattr(writer, f"add_{add}_token_id")(int(value))
    probe = tokenizer("a").input_ids
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
