"""Cell results cached by content hash, so a suite run again is served without re-measuring.

A cell's key covers the artifact's hash, the backend's settings, the measurement settings,
the evaluation rows, the seed, a measurement code version and this machine (CPU model,
cores, GPUs, library versions): a timing is reused only where it would be measured again.
Reused rows keep ``measured_in_run``, the run that timed them; ``--remeasure`` skips the cache.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from compbench.hashing import stable_hash
from compbench.results import to_jsonable
from compbench.suite import Cell, Suite

# Bump when measuring changes what a row says for the same model and settings.
MEASURE_VERSION = "2"   # 2: p10, every timed call, labels, seeds, FLOPs
RESULTS_DIR = "results"


@lru_cache(maxsize=1)
def machine_fingerprint() -> dict:
    from compbench import envinfo

    info = envinfo.collect()
    return {key: info[key] for key in ("cpu", "cpu_count", "cpu_affinity", "gpus", "packages", "python")}


def cell_key(suite: Suite, cell: Cell, artifact_hash: str, data_fingerprint: str) -> str:
    return stable_hash({
        "version": MEASURE_VERSION, "artifact": artifact_hash, "backend": cell.backend.model_dump(),
        "threads": cell.backend.resolved_threads(), "measure": suite.measure.model_dump(), "data": data_fingerprint,
        "max_seq_len": suite.teacher.max_seq_len, "seed": suite.seed, "machine": machine_fingerprint(),
    })


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / RESULTS_DIR

    def get(self, key: str, run_id: str) -> list[dict] | None:
        """The cached rows of a cell, relabelled for ``run_id``, or None."""
        path = self.dir / f"{key}.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        os.utime(path)     # last used: what ``compbench cache prune --older-than`` goes by
        return [{**row, "run_id": run_id} for row in rows]

    def put(self, key: str, rows: list[dict]) -> None:
        """Keep a cell's rows when all of them are ``ok`` (failures are always tried again)."""
        if not rows or any(row["status"] != "ok" for row in rows):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{key}.json"
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, default=to_jsonable))
        os.replace(tmp, path)
