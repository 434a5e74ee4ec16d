"""Cell results cached by content hash, so a suite run again is served without re-measuring.

The key (``measurement.cell.cell_key``) covers the artifact's recipe and content hashes (and the
teacher's it is timed against), the backend's settings, the measurement settings, the evaluation
rows, the seed, the measuring code and this machine (CPU model, cores, GPUs, library versions): a
timing is reused only where it would be measured again, and never for other bytes. Reused rows keep
``measured_in_run``, the run that timed them; ``--remeasure`` skips the cache. The runner caches a
cell only after its rows are in the run, and only when the machine was quiet while it was timed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from compbench.cache.layout import RESULTS_DIR
from compbench.common.files import to_jsonable, write_atomically


class ResultCache:
    """``<cache>/results/<key>.json``: ``{"key": key, "rows": [...]}``. An entry is served only when it is
    readable, names the key it is read under (a file copied onto another key is not) and holds rows;
    the caller checks the rows against the cell it asks for (``check``). Anything else is ignored,
    with a warning, and the cell measured again."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.dir = Path(root) / RESULTS_DIR
        self.warn = warn or (lambda message: print(f"compbench: warning: {message}", file=sys.stderr))

    def path_for(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str, check: Callable[[list[dict]], str | None] = lambda rows: None) -> list[dict] | None:
        """The rows stored under ``key`` when they pass ``check`` (None: they are rows of the asking cell;
        else what is wrong); None when there are none to serve. Served rows keep the identity of the cell
        that stored them: the caller gives them its own (``results.rows.as_rows_of``)."""
        path = self.path_for(key)
        try:
            entry = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:     # unreadable, invalid UTF-8, not JSON
            return self._ignore(path, f"unreadable ({type(exc).__name__})")
        if not isinstance(entry, dict) or entry.get("key") != key:
            return self._ignore(path, "not a cell result stored under this key")
        rows = entry.get("rows")
        problem = "holds no rows" if not isinstance(rows, list) or not rows else check(rows)
        if problem:
            return self._ignore(path, problem)
        try:
            os.utime(path)     # last used: what ``compbench cache prune --older-than`` goes by
        except OSError:        # a read-only shared cache
            pass
        return rows

    def put(self, key: str, rows: list[dict]) -> None:
        """Keep a cell's rows when all of them are ``ok`` (failures are always tried again). A cache that
        cannot be written (full, read-only) is a warning: the rows are in the run already."""
        if not rows or any(row["status"] != "ok" for row in rows):
            return
        try:
            write_atomically(self.path_for(key), json.dumps({"key": key, "rows": rows}, default=to_jsonable))
        except OSError as exc:
            self.warn(f"cell result not cached: cannot write {self.path_for(key)} ({exc.strerror or exc}); "
                      "the rows are in the run")

    def _ignore(self, path: Path, problem: str) -> None:
        self.warn(f"cached cell result {path}: {problem}: ignored, measured again")
        return None
