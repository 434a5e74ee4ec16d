"""The result row (the contract in design.md) and the durable ``results.jsonl`` file.

A row is one measured (task, pipeline, backend, profile, batch size, sequence length). Besides
the design contract's keys it carries what reports need to read it without parsing strings:
its ``backend_label``, ``precision`` and ``fp32_backend_label`` (the backend it is compared on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compbench.common.errors import UsageError
from compbench.common.files import atomic_path, to_jsonable, write_atomically
from compbench.config.cells import Cell
from compbench.config.measure import NATURAL

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
    """Every row of a results file. A last line that is not whole JSON and has no newline (a write cut off by
    a kill) is skipped, and so are blank lines; any other line that is not a result row is a usage error
    naming the file and the line."""
    rows: list[dict] = []
    if not Path(path).is_file():
        return rows
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            cut_off = not raw.endswith(b"\n")        # only the last line can lack one: a write a kill cut short
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                if cut_off:
                    continue
                shown = _cut(repr(raw.rstrip(b"\r\n")))
                raise _not_a_row(path, number, f"byte {exc.start + 1} of the line is not UTF-8: {shown}") from None
            except json.JSONDecodeError:
                if cut_off:
                    continue
                raise _not_a_row(path, number, f"not JSON: {_cut(repr(raw.decode('utf-8').rstrip()))}") from None
            problem = row_problem(value)
            if problem is not None:
                raise _not_a_row(path, number, f"{problem}: {_shown(value)}")
            rows.append(with_identity(value))
    return rows


def row_problem(row: Any) -> str | None:
    """What is wrong with ``row`` as a result row, in a few words; None when it is one (the contract's keys,
    a known status, the identity strings and shape integers, and an ``ok`` row's numeric metric)."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return f"lacks {listed} of the row keys"
    if row["status"] not in STATUSES:
        return f"status {_shown(row['status'])} is not one of {', '.join(STATUSES)}"
    for key in ("run_id", "cell_id", "task", "pipeline"):
        if not isinstance(row[key], str):
            return f"{key} {_shown(row[key])} is not a string"
    if row["cell_id"].count("/") < 2:
        return f"cell_id {_shown(row['cell_id'])} is not task/pipeline/backend"
    if not _is_int(row["batch_size"]):
        return f"batch_size {_shown(row['batch_size'])} is not an integer"
    if not (_is_int(row["seq_len"]) or row["seq_len"] == NATURAL):
        return f"seq_len {_shown(row['seq_len'])} is neither an integer nor '{NATURAL}'"
    if row["status"] == "ok" and not _is_number(row["metric"]):
        return f"an ok row's metric {_shown(row['metric'])} is not a number"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value as JSON, short."""
    return _cut(json.dumps(value, ensure_ascii=False, default=repr))


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _not_a_row(path: Path, number: int, what: str) -> UsageError:
    return UsageError(f"{path} line {number}: not a result row ({what}); each line must be a JSON object with the "
                      "row keys (run_id, cell_id, ...): remove or fix the line")


LABELS_DIR = "labels"


def write_labels(run_dir: Path, task: str, labels_by_split: dict[str, list]) -> None:
    """The evaluation rows' labels, in the order of every row's ``predictions``, so reports
    can score and compare rows (paired bootstrap) from the run folder alone."""
    write_atomically(Path(run_dir) / LABELS_DIR / f"{task}.json", json.dumps(labels_by_split))


def read_labels(run_dir: Path, task: str) -> dict[str, list]:
    path = Path(run_dir) / LABELS_DIR / f"{task}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
