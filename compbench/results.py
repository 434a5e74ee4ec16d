"""The result row contract (see design.md) and the durable ``results.jsonl`` file."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Every row has every one of these keys (None where not measured).
ROW_KEYS = (
    "run_id", "cell_id", "task", "pipeline", "steps", "backend", "profile", "device", "threads",
    "batch_size", "seq_len", "status", "reason", "metric_name", "metric", "metric_ci95", "metrics",
    "latency_ms", "throughput_per_s", "size_bytes", "params", "nonzero_params", "artifact",
)
STATUSES = ("ok", "failed", "skipped")


def empty_row(**values) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(values)
    return row


class ResultsFile:
    """Append-only JSON lines; each row is flushed and fsynced before ``append`` returns,
    so a killed run leaves every finished row readable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: dict) -> None:
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"result row lacks contract keys: {missing}")
        line = json.dumps(row, sort_keys=False, default=_jsonable) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict]:
        return read_rows(self.path)


def read_rows(path: Path) -> list[dict]:
    """Every complete row; a line that is not whole JSON (a write cut off by a kill) is skipped."""
    rows = []
    if not Path(path).is_file():
        return rows
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


LABELS_DIR = "labels"


def write_labels(run_dir: Path, task: str, labels_by_split: dict[str, list]) -> None:
    """The evaluation rows' labels, in the order of every row's ``predictions``, so reports
    can score and compare rows (paired bootstrap) from the run folder alone."""
    path = Path(run_dir) / LABELS_DIR / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(labels_by_split))
    os.replace(tmp, path)


def read_labels(run_dir: Path, task: str) -> dict[str, list]:
    path = Path(run_dir) / LABELS_DIR / f"{task}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
