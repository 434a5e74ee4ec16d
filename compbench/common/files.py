"""Writing files and folders so that no reader ever sees half of one: write aside, then rename.

Every file or folder compbench publishes for another process (artifacts, ONNX exports, cached
results and logits, run files) goes through :func:`atomic_path`; a kill at any moment leaves
either the old content or the new, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(final: Path | str, *, folder: bool = False, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``final`` to write: a file, or with ``folder`` a new empty folder.

    When the block ends it is renamed onto ``final`` (a file replaces what was there; a folder
    that another process put in place first is kept, ours dropped: both are the same
    content-addressed build). When the block raises it is removed. ``fsync`` flushes a file to
    disk before the rename. Temporary names start with ``.`` and are unique per process and call,
    so concurrent writers (forked workers too) never share one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    else:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if fsync and not folder:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        _rename(tmp, final, folder)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _rename(tmp: Path, final: Path, folder: bool) -> None:
    try:
        os.replace(tmp, final)
    except OSError:
        if not (folder and final.is_dir()):
            raise
        shutil.rmtree(tmp, ignore_errors=True)   # another process got there first: keep theirs


def write_atomically(path: Path | str, content: str | bytes, *, fsync: bool = False) -> None:
    """``path`` holds ``content`` (text is UTF-8), written aside and renamed into place."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)


def save_array_atomically(path: Path | str, array) -> None:
    """``path`` holds ``array`` in numpy's ``.npy`` format, written aside and renamed into place."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def to_jsonable(value):
    """``json.dumps``'s ``default``: numpy values and arrays as plain numbers and lists, paths as strings."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
