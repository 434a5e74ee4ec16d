"""``compbench cache ls / prune``: what the cache holds, and clearing what is stale.

The cache folder holds ``artifacts/<hash>/`` (models: teachers and every pipeline step),
``results/<key>.json`` (measured cells), ``reference-logits/`` (parity references) and,
while a build runs, ``artifacts/.<hash>-*`` temporary folders. A temporary folder left by a
killed build is removed by ``prune`` once no process is writing it (none newer than an hour); a
folder that failed its seal (``.<hash>-damaged-*``) or has no ``compbench.json`` is never used and
is always removed.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from compbench.cache.layout import ARTIFACTS_DIR, LAST_USED, REFERENCE_LOGITS_DIR, RESULTS_DIR
from compbench.cache.store import DAMAGED
from compbench.models.artifact import META_FILE
from compbench.models.gguf import CONVERTED_DIR
from compbench.models.gguf import META_FILE as GGUF_META

TEMP_GRACE_SECONDS = 3600


@dataclass
class Entry:
    kind: str              # artifact, result, reference, temp, damaged, incomplete
    path: Path
    bytes: int
    last_used: float       # epoch seconds
    description: str = ""


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _artifact_entry(path: Path) -> Entry:
    marker = path / LAST_USED
    last_used = marker.stat().st_mtime if marker.exists() else (path / META_FILE).stat().st_mtime
    try:
        meta = json.loads((path / META_FILE).read_text())
        steps = [entry.get("step", "?") for entry in meta.get("lineage", [])]
        description = (
            f"{meta.get('task')} {meta.get('format')} {meta.get('precision')}: {' > '.join(steps) or 'imported'}"
        )
    except (OSError, json.JSONDecodeError):
        description = "unreadable compbench.json"
    return Entry("artifact", path, folder_bytes(path), last_used, description)


def _converted_entry(path: Path) -> Entry:
    """A checkpoint converted into a ``save_pretrained`` folder (a GGUF file de-quantized to fp32), or what an
    interrupted conversion left behind."""
    if path.name.startswith("."):
        return Entry("temp", path, folder_bytes(path), _newest_mtime(path), "unfinished conversion")
    try:
        meta = json.loads((path / GGUF_META).read_text())
        description = f"{meta.get('source_file')} de-quantized to fp32 ({meta.get('seconds', 0):.0f}s to convert)"
    except (OSError, ValueError):
        return Entry("incomplete", path, folder_bytes(path), _newest_mtime(path),
                     f"no readable {GGUF_META}: converted again when used")
    return Entry("converted", path, folder_bytes(path), _newest_mtime(path), description)


def entries(root: Path) -> list[Entry]:
    found: list[Entry] = []
    artifacts = root / ARTIFACTS_DIR
    for path in sorted(artifacts.iterdir()) if artifacts.is_dir() else []:
        if path.name.startswith(".") and f"-{DAMAGED}-" in path.name:
            found.append(Entry("damaged", path, folder_bytes(path), _newest_mtime(path),
                               "did not match its seal: moved aside, built again"))
        elif path.name.startswith("."):
            found.append(Entry("temp", path, folder_bytes(path), _newest_mtime(path), "unfinished build"))
        elif (path / META_FILE).is_file():
            found.append(_artifact_entry(path))
        else:
            found.append(Entry("incomplete", path, folder_bytes(path), _newest_mtime(path),
                               f"no {META_FILE}: not used; replaced by the next build"))
    for path in sorted((root / CONVERTED_DIR).iterdir()) if (root / CONVERTED_DIR).is_dir() else []:
        found.append(_converted_entry(path))
    for kind, folder in (("result", RESULTS_DIR), ("reference", REFERENCE_LOGITS_DIR)):
        for path in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            found.append(Entry(kind, path, path.stat().st_size, path.stat().st_mtime))
    return found


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))]
    return max(times)


def stale(entry: Entry, now: float, older_than_days: float | None, everything: bool) -> bool:
    if everything or entry.kind in ("damaged", "incomplete"):     # never used again: nothing to keep them for
        return True
    if entry.kind == "temp":
        return now - entry.last_used > TEMP_GRACE_SECONDS
    return older_than_days is not None and now - entry.last_used > older_than_days * 86400


def prune(root: Path, older_than_days: float | None, everything: bool, dry_run: bool) -> list[Entry]:
    """Remove (or with ``dry_run`` only list) stale entries; always the abandoned temporary folders."""
    now = time.time()
    chosen = [entry for entry in entries(root) if stale(entry, now, older_than_days, everything)]
    if not dry_run:
        for entry in chosen:
            if entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
    return chosen


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def listing(root: Path) -> list[str]:
    """The lines of ``compbench cache ls``."""
    found, now = entries(root), time.time()
    lines = [f"cache: {root}"]
    artifacts = [e for e in found if e.kind == "artifact"]
    for entry in sorted(artifacts, key=lambda e: -e.last_used):
        used = age(now - entry.last_used)
        lines.append(f"  {entry.path.name}  {human_bytes(entry.bytes):>9}  used {used:>6} ago  {entry.description}")
    for entry in (e for e in found if e.kind == "converted"):
        used = age(now - entry.last_used)
        lines.append(f"  converted/{entry.path.name}  {human_bytes(entry.bytes):>9}  used {used:>6} ago  "
                     f"{entry.description}")
    for entry in (e for e in found if e.kind in ("damaged", "incomplete")):
        lines.append(f"  {entry.path.name}  {human_bytes(entry.bytes):>9}  {entry.kind}: {entry.description}")
    for kind, what in (("result", "measured cells"), ("reference", "parity references"), ("temp", "unfinished builds")):
        of_kind = [e for e in found if e.kind == kind]
        if of_kind:
            lines.append(f"  {len(of_kind)} {what}, {human_bytes(sum(e.bytes for e in of_kind))}")
    lines.append(f"total: {len(artifacts)} artifacts, {human_bytes(sum(e.bytes for e in found))}")
    return lines
