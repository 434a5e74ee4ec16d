"""Content hashes for cache keys: JSON-able values and files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


def stable_hash(value: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys), shortened."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def files_hash(paths: Iterable[Path], length: int = 16) -> str:
    """sha256 over the names and bytes of ``paths`` (in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]
