"""Running suites as a user does, for the runner's tests: ``python -m compbench`` in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from compbench.results.rows import read_rows


def suite_dict(model: Path, data: Path, backends: list[dict], pipelines: list[dict] | None = None, **extra) -> dict:
    return {
        "name": "runner", "model": str(model), "tasks": ["sst2"],
        "data": {"dir": str(data / "glue"), "limit_train": 64, "limit_eval": 64, "seed": 0},
        "teacher": {"epochs": 1, "max_steps": 4, "batch_size": 16, "learning_rate": 1e-3, "max_seq_len": 32, "seed": 1},
        "pipelines": pipelines if pipelines is not None else [
            {"name": "baseline"},
            {"name": "pruned", "backends": ["torch"],
             "steps": [{"compressor": "prune", "params": {"method": "magnitude", "amount": 0.5}}]},
        ],
        "backends": backends,
        "measure": {"batch_sizes": [1, 2], "seq_lens": [16], "warmup_iters": 1, "min_iters": 2, "min_seconds": 0.05},
        **extra,
    }


class Runner:
    """``python -m compbench ...`` in a child process with the plugin on its path and a given cache."""

    def __init__(self, tmp_path: Path, plugin: Path, cache: Path) -> None:
        self.tmp_path, self.results = tmp_path, tmp_path / "results"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
                    "COMPBENCH_CACHE_DIR": str(cache)}

    def write_suite(self, name: str, suite: dict) -> Path:
        path = self.tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(suite))
        return path

    def args(self, *args) -> list[str]:
        return [sys.executable, "-m", "compbench", *map(str, args)]

    def run(self, *args, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen(self.args(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def rows(self, run_id: str) -> list[dict]:
        return read_rows(self.results / run_id / "results.jsonl")


def row_keys(rows: list[dict]) -> list[tuple]:
    return sorted((r["cell_id"], r["batch_size"], r["seq_len"], r["status"]) for r in rows)
