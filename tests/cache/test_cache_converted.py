"""``compbench cache ls`` and ``prune`` see the converted checkpoints (a GGUF file de-quantized to fp32) beside the
artifacts: listed with their source, removed by age or ``--all``, an unfinished conversion always."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from compbench.cache.admin import entries, listing, prune
from compbench.models.gguf import CONVERTED_DIR, META_FILE


def _converted(root: Path, name: str, age_days: float = 0.0) -> Path:
    folder = root / CONVERTED_DIR / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    (folder / META_FILE).write_text(json.dumps({"source_file": "SmolLM2.Q4_1.gguf", "seconds": 29.6}))
    stamp = time.time() - age_days * 86400
    for path in (*folder.iterdir(), folder):
        os.utime(path, (stamp, stamp))
    return folder


def test_converted_checkpoints_are_listed_and_pruned_by_age(tmp_path):
    fresh, old = _converted(tmp_path, "aaaa"), _converted(tmp_path, "bbbb", age_days=40)
    unfinished = tmp_path / CONVERTED_DIR / ".cccc-tmp"
    unfinished.mkdir()
    (tmp_path / CONVERTED_DIR / "dddd").mkdir()           # no record of what it was converted from
    kinds = {entry.path.name: entry.kind for entry in entries(tmp_path)}
    assert kinds == {"aaaa": "converted", "bbbb": "converted", ".cccc-tmp": "temp", "dddd": "incomplete"}
    text = "\n".join(listing(tmp_path))
    assert "converted/aaaa" in text and "SmolLM2.Q4_1.gguf de-quantized to fp32" in text
    removed = {entry.path.name for entry in prune(tmp_path, older_than_days=30, everything=False, dry_run=False)}
    assert removed == {"bbbb", "dddd"}                   # the temp folder is young: a conversion may be writing it
    assert fresh.is_dir() and not old.exists()
    prune(tmp_path, older_than_days=None, everything=True, dry_run=False)
    assert not fresh.exists()
