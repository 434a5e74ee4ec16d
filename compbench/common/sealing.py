"""Seals: the sizes and sha256 hashes of a folder's files, written when the folder is made and checked
before it is used, so damaged or altered bytes are caught instead of measured.

A folder's check is remembered per process by each file's (size, mtime, inode): a file is hashed
again only when it may have changed, so checking an artifact before every use costs one stat per file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

Manifest = dict[str, dict]     # relative path -> {"bytes": size, "sha256": hex digest}

# (path, size, mtime_ns, inode) -> sha256 of the bytes seen then
_SEEN: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    seen = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if seen not in _SEEN:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SEEN[seen] = digest.hexdigest()
    return _SEEN[seen]


def sealed_files(folder: Path, skip: tuple[str, ...]) -> list[str]:
    """The folder's files (relative, sorted) that a seal covers: all but the top-level names in ``skip``."""
    folder = Path(folder)
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and path.relative_to(folder).parts[0] not in skip)


def manifest_of(folder: Path, skip: tuple[str, ...] = ()) -> Manifest:
    """The seal of ``folder``: every file's size and sha256 (but the top-level names in ``skip``)."""
    folder = Path(folder)
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
            for name in sealed_files(folder, skip)}


def seal_problem(folder: Path, manifest: Manifest, skip: tuple[str, ...] = ()) -> str | None:
    """What differs between ``folder`` and its seal (one line naming the file), or None when it matches."""
    folder = Path(folder)
    if not manifest:
        return f"{folder}: has no seal (made before compbench sealed its cache, or not by compbench)"
    for name, sealed in sorted(manifest.items()):
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"{path}: missing or unreadable ({exc.strerror or exc})"
        if size != sealed["bytes"]:
            return f"{path}: {size} bytes, sealed with {sealed['bytes']}"
        if file_sha256(path) != sealed["sha256"]:
            return f"{path}: its bytes differ from the seal (sha256 {file_sha256(path)[:12]}, sealed "\
                   f"{sealed['sha256'][:12]})"
    extra = sorted(set(sealed_files(folder, skip)) - set(manifest))
    if extra:
        return f"{folder / extra[0]}: not in the seal (a file added after the folder was made)"
    return None


def unique_aside(path: Path, why: str) -> Path:
    """A free hidden name beside ``path`` to move it to (``.<name>-<why>-<pid>-<n>``)."""
    for n in range(1000):
        aside = path.with_name(f".{path.name}-{why}-{os.getpid()}-{n}")
        if not aside.exists():
            return aside
    raise FileExistsError(f"no free name beside {path}")


def save_sealed_array(path: Path, array) -> None:
    """``path`` holds ``array`` (``.npy``), with its sha256 beside it (``<path>.sha256``), both written
    atomically; :func:`load_sealed_array` serves it only while the two agree."""
    from compbench.common.files import save_array_atomically, write_atomically

    save_array_atomically(path, array)
    write_atomically(_seal_of(path), file_sha256(Path(path)) + "\n")


def load_sealed_array(path: Path):
    """The array saved at ``path`` by :func:`save_sealed_array`, or None when there is none or its bytes
    differ from its seal (computed again by the caller)."""
    import numpy as np

    path = Path(path)
    try:
        sealed = _seal_of(path).read_text().strip()
        if file_sha256(path) != sealed:
            return None
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def _seal_of(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")
