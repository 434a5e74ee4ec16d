"""The result row (the contract in design.md) and the durable ``results.jsonl`` file.

A row is one measured (task, pipeline, backend, profile, batch size, sequence length). Besides
the design contract's keys it carries what reports need to read it without parsing strings:
its ``backend_label``, ``precision`` and ``fp32_backend_label`` (the backend it is compared on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from compbench.common.files import atomic_path, to_jsonable, write_atomically
from compbench.config.cells import Cell

# The design contract: every row has every one of these keys (None where not measured).
ROW_KEYS = (
    "run_id", "cell_id", "task", "pipeline", "steps", "backend", "profile", "device", "threads",
    "batch_size", "seq_len", "status", "reason", "metric_name", "metric", "metric_ci95", "metrics",
    "latency_ms", "throughput_per_s", "size_bytes", "params", "nonzero_params", "artifact",
)
# What compbench's own rows carry besides (rows written before them get them when read).
IDENTITY_KEYS = ("backend_label", "precision", "fp32_backend_label")
STATUSES = ("ok", "failed", "skipped")


def empty_row(**values) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(values)
    return row


def cell_identity(run_id: str, cell: Cell, batch_size: int, seq_len: int) -> dict:
    """Which measurement a row is: the run, the cell (task, pipeline and its steps, backend entry) and the shape."""
    options = cell.backend
    return dict(
        run_id=run_id, cell_id=cell.cell_id, task=cell.task, pipeline=cell.pipeline.name,
        steps=[{"compressor": s.compressor, "params": s.params} for s in cell.pipeline.steps],
        backend=options.name, profile=options.profile, device=options.device, precision=options.precision,
        backend_label=options.label, fp32_backend_label=options.fp32_label,
        threads=options.resolved_threads(), batch_size=batch_size, seq_len=seq_len,
    )


def cell_row(run_id: str, cell: Cell, batch_size: int, seq_len: int, **values) -> dict:
    """A row of ``cell`` at one shape, with its identity filled in and ``values`` added."""
    return empty_row(**{**values, **cell_identity(run_id, cell, batch_size, seq_len)})


def as_rows_of(cell: Cell, run_id: str, rows: list[dict]) -> list[dict]:
    """Measured rows (from the result cache, which may have stored them for another pipeline with the same
    model) as rows of ``cell`` in this run: the measurement kept, the identity the asking cell's."""
    return [{**row, **cell_identity(run_id, cell, row["batch_size"], row["seq_len"])} for row in rows]


def closed_rows(run_id: str, cell: Cell, shapes: list[tuple[int, int]], status: str, reason: str) -> list[dict]:
    """The rows of a cell that was not measured: one per shape, with why."""
    return [cell_row(run_id, cell, b, s, status=status, reason=reason) for b, s in shapes]


def with_identity(row: dict) -> dict:
    """``row`` with its ``IDENTITY_KEYS``: rows written before rows carried them get them from their
    cell id (``task/pipeline/label``, the label's fourth part the precision when it is not fp32)."""
    if all(row.get(key) is not None for key in IDENTITY_KEYS):
        return row
    label = row["cell_id"].split("/", 2)[2]
    parts = label.split(":")
    precision = row.get("precision") or "fp32"
    if precision != "fp32" and len(parts) > 3 and parts[3] == precision:
        del parts[3]
    return {**row, "backend_label": label, "precision": precision, "fp32_backend_label": ":".join(parts)}


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
        """Replace the file's rows at once (a new file, synced, renamed over the old one)."""
        with atomic_path(self.path, fsync=True) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=to_jsonable) + "\n")

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
                rows.append(with_identity(json.loads(line)))
            except json.JSONDecodeError:
                continue
    return rows


LABELS_DIR = "labels"


def write_labels(run_dir: Path, task: str, labels_by_split: dict[str, list]) -> None:
    """The evaluation rows' labels, in the order of every row's ``predictions``, so reports
    can score and compare rows (paired bootstrap) from the run folder alone."""
    write_atomically(Path(run_dir) / LABELS_DIR / f"{task}.json", json.dumps(labels_by_split))


def read_labels(run_dir: Path, task: str) -> dict[str, list]:
    path = Path(run_dir) / LABELS_DIR / f"{task}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
