"""Cell results cached by content hash, so a suite run again is served without re-measuring.

The key (``measurement.cell.cell_key``) covers the artifact's hash, the backend's settings, the
measurement settings, the evaluation rows, the seed, a measurement code version and this machine
(CPU model, cores, GPUs, library versions): a timing is reused only where it would be measured
again. Reused rows keep ``measured_in_run``, the run that timed them; ``--remeasure`` skips the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from compbench.cache.layout import RESULTS_DIR
from compbench.common.files import to_jsonable, write_atomically


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / RESULTS_DIR

    def get(self, key: str) -> list[dict] | None:
        """The cached rows stored under ``key``, or None. They keep the identity of the cell that stored
        them: the caller gives them its own (``results.rows.as_rows_of``)."""
        path = self.dir / f"{key}.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        os.utime(path)     # last used: what ``compbench cache prune --older-than`` goes by
        return rows

    def put(self, key: str, rows: list[dict]) -> None:
        """Keep a cell's rows when all of them are ``ok`` (failures are always tried again)."""
        if not rows or any(row["status"] != "ok" for row in rows):
            return
        write_atomically(self.dir / f"{key}.json", json.dumps(rows, default=to_jsonable))
