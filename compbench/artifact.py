"""``ModelArtifact``: the common model interface every compressor and backend shares.

An artifact is a folder holding the model in one declared format, its tokenizer, and
``compbench.json`` (task, label count, format, lineage, content hash). Artifacts are
written to a temporary folder and renamed into place, so a folder that exists is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from compbench.errors import CompbenchError

META_FILE = "compbench.json"


class ArtifactFormat:
    """How one on-disk model format is deployed, counted and loaded into PyTorch."""

    name: ClassVar[str]

    def deployed_files(self, folder: Path) -> list[Path]:
        raise CompbenchError(f"format {self.name!r} does not list its files")

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        raise CompbenchError(f"format {self.name!r} cannot count parameters")

    def load_torch(self, folder: Path):
        raise CompbenchError(f"format {self.name!r} cannot be loaded into PyTorch")


class HuggingFaceFormat(ArtifactFormat):
    """``save_pretrained`` folder with safetensors weights."""

    name = "hf"

    def deployed_files(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("*.safetensors")) + [folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        from safetensors import safe_open

        total = nonzero = 0
        for weights in sorted(folder.glob("*.safetensors")):
            with safe_open(str(weights), framework="pt") as tensors:
                for key in tensors.keys():
                    tensor = tensors.get_tensor(key)
                    total += tensor.numel()
                    nonzero += int(tensor.count_nonzero())
        return total, nonzero

    def load_torch(self, folder: Path):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder)


FORMATS: dict[str, ArtifactFormat] = {fmt.name: fmt for fmt in (HuggingFaceFormat(),)}


@dataclass
class ModelArtifact:
    path: Path
    task: str
    num_labels: int
    format: str
    hash: str
    lineage: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | str) -> "ModelArtifact":
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        return cls(path=path, **meta)

    def write_meta(self) -> None:
        meta = {k: v for k, v in asdict(self).items() if k != "path"}
        (self.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @property
    def model_format(self) -> ArtifactFormat:
        try:
            return FORMATS[self.format]
        except KeyError:
            raise CompbenchError(f"{self.path / META_FILE}: unknown model format {self.format!r}; known: {', '.join(FORMATS)}") from None

    def size_bytes(self) -> int:
        """Bytes on disk of what would be deployed (weights and model config, not the tokenizer)."""
        return sum(p.stat().st_size for p in self.model_format.deployed_files(self.path))

    def parameter_counts(self) -> tuple[int, int]:
        """(parameters, non-zero parameters) as stored."""
        return self.model_format.parameter_counts(self.path)

    def torch_model(self):
        return self.model_format.load_torch(self.path)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)


class ArtifactStore:
    """Artifacts by content hash under one folder: build once, reuse afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, artifact_hash: str) -> Path:
        return self.root / "artifacts" / artifact_hash

    def get(self, artifact_hash: str) -> ModelArtifact | None:
        path = self.path_for(artifact_hash)
        return ModelArtifact.load(path) if (path / META_FILE).is_file() else None

    def build(self, artifact_hash: str, write: Callable[[Path], ModelArtifact]) -> ModelArtifact:
        """Return the stored artifact, or call ``write(tmp_folder)`` and move it into place."""
        cached = self.get(artifact_hash)
        if cached is not None:
            return cached
        final = self.path_for(artifact_hash)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{artifact_hash}-", dir=final.parent))
        try:
            artifact = write(tmp)
            artifact.path = tmp
            artifact.hash = artifact_hash
            artifact.write_meta()
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return ModelArtifact.load(final)


def save_hf_artifact(folder: Path, model, tokenizer, *, task: str, lineage: list[dict]) -> ModelArtifact:
    """Write a PyTorch model + tokenizer as an ``hf`` artifact (hash filled in by the store)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return ModelArtifact(path=folder, task=task, num_labels=model.config.num_labels, format="hf", hash="", lineage=lineage)
