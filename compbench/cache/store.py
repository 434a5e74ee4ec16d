"""The content-addressed artifact store: each model built once under its hash, reused afterwards.

Every artifact is sealed when it is built (each file's size and sha256 in its ``compbench.json``)
and checked against its seal whenever it is taken from the store. A folder that fails the check
(damaged bytes, a file missing or added, no ``compbench.json``, no seal) is never used: it is moved
aside (``artifacts/.<hash>-damaged-*``, which ``compbench cache prune`` removes) so that the next
build puts a good one in its place; where it cannot be moved (a read-only cache) the store refuses
it in one line naming the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from compbench.cache.layout import ARTIFACTS_DIR, LAST_USED
from compbench.common.errors import CompbenchError
from compbench.common.files import atomic_path
from compbench.common.sealing import manifest_of, seal_problem, unique_aside
from compbench.models.artifact import DERIVED, META_FILE, ModelArtifact

# What an artifact's seal leaves out: its own record, the last-use marker, and the caches of what is computed
# from it later (ONNX exports, teacher logits: each sealed on its own).
UNSEALED = (META_FILE, LAST_USED, *DERIVED)
DAMAGED = "damaged"       # the tag of a folder moved aside


class DamagedArtifactError(CompbenchError):
    """A stored artifact does not match its seal and could not be moved aside to be rebuilt."""


class ArtifactStore:
    """Artifacts by content hash under one folder: build once, reuse afterwards, checked on every use."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.warn = warn or (lambda message: print(f"compbench: warning: {message}", file=sys.stderr))

    def path_for(self, artifact_hash: str) -> Path:
        return self.root / ARTIFACTS_DIR / artifact_hash

    def get(self, artifact_hash: str) -> ModelArtifact | None:
        """The stored artifact when its folder matches its seal; None when there is none, or when the
        folder did not match and was moved aside (the caller builds it again)."""
        path = self.path_for(artifact_hash)
        if not path.exists():
            return None
        artifact, problem = self._checked(path)
        if problem is not None:
            self._set_aside(path, problem)
            return None
        try:
            (path / LAST_USED).touch()    # what `compbench cache prune --older-than` goes by
        except OSError:                   # a read-only shared cache
            pass
        return artifact

    def require(self, artifact_hash: str) -> ModelArtifact:
        """The stored artifact, or an error saying why there is none to use."""
        artifact = self.get(artifact_hash)
        if artifact is None:
            raise CompbenchError(f"artifact {artifact_hash} is not in the cache {self.root} (or was damaged and "
                                 "moved aside); run the suite again to rebuild it")
        return artifact

    def build(self, artifact_hash: str, write: Callable[[Path], ModelArtifact]) -> ModelArtifact:
        """Return the stored artifact, or call ``write(tmp_folder)``, seal the folder and move it into place."""
        cached = self.get(artifact_hash)
        if cached is not None:
            return cached
        final = self.path_for(artifact_hash)
        with atomic_path(final, folder=True) as tmp:
            artifact = write(tmp)
            artifact.path = tmp
            artifact.hash = artifact_hash
            artifact.files = manifest_of(tmp, UNSEALED)
            artifact.write_meta()
        built, problem = self._checked(final)
        if problem is not None:
            raise DamagedArtifactError(f"{problem}; just built, so the cache folder itself is unreliable")
        return built

    def _checked(self, path: Path) -> tuple[ModelArtifact | None, str | None]:
        """(the artifact, None) when ``path`` matches its seal, else (None, what is wrong in one line)."""
        try:
            artifact = ModelArtifact.load(path)
        except FileNotFoundError:
            return None, f"{path / META_FILE}: missing (a folder left incomplete, or not made by compbench)"
        except (OSError, ValueError, TypeError) as exc:   # unreadable, not JSON, or not an artifact's record
            return None, f"{path / META_FILE}: unreadable ({type(exc).__name__}: {exc})"
        return artifact, seal_problem(path, artifact.files, UNSEALED)

    def _set_aside(self, path: Path, problem: str) -> None:
        """Move a folder that failed its check out of the way, so its key can be built again."""
        aside = unique_aside(path, DAMAGED)
        try:
            os.rename(path, aside)
        except FileNotFoundError:         # another process moved it first
            return
        except OSError as exc:
            raise DamagedArtifactError(f"{problem}; the cache cannot be changed ({exc.strerror}): remove {path} "
                                       "or use another --cache-dir") from None
        self.warn(f"{problem}: not used; moved aside to {aside.name} and built again")
