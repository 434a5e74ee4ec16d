"""The content-addressed artifact store: each model built once under its hash, reused afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from compbench.cache.layout import ARTIFACTS_DIR, LAST_USED
from compbench.common.files import atomic_path
from compbench.models.artifact import META_FILE, ModelArtifact


class ArtifactStore:
    """Artifacts by content hash under one folder: build once, reuse afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, artifact_hash: str) -> Path:
        return self.root / ARTIFACTS_DIR / artifact_hash

    def get(self, artifact_hash: str) -> ModelArtifact | None:
        path = self.path_for(artifact_hash)
        if not (path / META_FILE).is_file():
            return None
        try:
            (path / LAST_USED).touch()    # what `compbench cache prune --older-than` goes by
        except OSError:                   # a read-only shared cache
            pass
        return ModelArtifact.load(path)

    def build(self, artifact_hash: str, write: Callable[[Path], ModelArtifact]) -> ModelArtifact:
        """Return the stored artifact, or call ``write(tmp_folder)`` and move the folder into place."""
        cached = self.get(artifact_hash)
        if cached is not None:
            return cached
        final = self.path_for(artifact_hash)
        with atomic_path(final, folder=True) as tmp:
            artifact = write(tmp)
            artifact.path = tmp
            artifact.hash = artifact_hash
            artifact.write_meta()
        return ModelArtifact.load(final)
