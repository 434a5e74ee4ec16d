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
    """Append-only JSON lines; each row is written by one ``O_APPEND`` write and fsynced before
    ``append`` returns, so a killed run leaves every finished row readable (a row cut off
    mid-write is skipped by ``read_rows`` and dropped by ``--resume``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: dict) -> None:
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"result row lacks contract keys: {missing}")
        data = (json.dumps(row, sort_keys=False, default=to_jsonable) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:                  # one write call for a row in practice; a loop for the rare short write
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file's rows at once (a new file renamed over the old one)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=to_jsonable) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

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


def to_jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
