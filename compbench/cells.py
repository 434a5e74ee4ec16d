"""Measuring one cell: a built artifact on one backend -> one result row per timed shape."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compbench.artifact import ArtifactStore, ModelArtifact
from compbench.backends import BACKENDS, BackendOptions
from compbench.encoding import timing_batch
from compbench.errors import UnsupportedError
from compbench.flops import flops_per_example
from compbench.hashing import stable_hash
from compbench.measure import evaluate_session, max_abs_difference, size_of, split_logits, time_shape
from compbench.progress import Reporter
from compbench.results import empty_row
from compbench.suite import Cell, Suite
from compbench.tasks import TaskData


def shapes(suite: Suite) -> list[tuple[int, int]]:
    """The (batch size, sequence length) pairs every cell is timed at: one row each."""
    return [(b, s) for b in suite.measure.batch_sizes for s in suite.measure.seq_lens]


def cell_row(run_id: str, cell: Cell, batch_size: int, seq_len: int, **values) -> dict:
    options = cell.backend
    return empty_row(
        run_id=run_id, cell_id=cell.cell_id, task=cell.task, pipeline=cell.pipeline.name,
        steps=[{"compressor": s.compressor, "params": s.params} for s in cell.pipeline.steps],
        backend=options.name, profile=options.profile, device=options.device, precision=options.precision,
        threads=options.resolved_threads(), batch_size=batch_size, seq_len=seq_len, **values,
    )


def closed_rows(run_id: str, cell: Cell, suite: Suite, status: str, reason: str) -> list[dict]:
    """The rows of a cell that was not measured: one per shape, with why."""
    return [cell_row(run_id, cell, b, s, status=status, reason=reason) for b, s in shapes(suite)]


@dataclass
class Failures:
    """What went wrong while doing a job: one-line reasons for rows, full tracebacks for errors.log."""

    tracebacks: list[str] = field(default_factory=list)

    def describe(self, where: str, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}".strip()
        self.tracebacks.append(f"--- {where}\n{traceback.format_exc()}")
        return reason


class CellMeasurement:
    """Measures cells of one run: accuracy through the timed session, size, latency per shape,
    and logit parity against PyTorch fp32 (reference logits cached on disk by artifact)."""

    def __init__(self, suite: Suite, run_id: str, store: ArtifactStore, reporter: Reporter, failures: Failures) -> None:
        self.suite, self.run_id, self.store, self.reporter, self.failures = suite, run_id, store, reporter, failures

    def measure(self, cell: Cell, artifact: ModelArtifact, data: TaskData) -> list[dict]:
        backend = BACKENDS.get(cell.backend.name)()
        availability = backend.availability(cell.backend)
        if not availability.ok:
            return closed_rows(self.run_id, cell, self.suite, "skipped", availability.reason)
        self.reporter.log(f"{cell.cell_id}: measuring")
        try:
            session = backend.load(artifact, cell.backend)
        except UnsupportedError as exc:
            return closed_rows(self.run_id, cell, self.suite, "skipped", str(exc))
        except Exception as exc:
            return closed_rows(self.run_id, cell, self.suite, "failed", self.failures.describe(cell.cell_id, exc))
        try:
            return self._measure_session(cell, session, artifact, data)
        finally:
            session.close()

    def _measure_session(self, cell: Cell, session, artifact: ModelArtifact, data: TaskData) -> list[dict]:
        try:
            tokenizer = artifact.tokenizer()
            accuracy, logits = evaluate_session(session, tokenizer, data, self.suite.teacher.max_seq_len, self.suite.measure, self.suite.seed)
            common = {**size_of(artifact, session), **accuracy, "artifact": str(artifact.path), "artifact_hash": artifact.hash,
                      "artifact_format": artifact.format, "artifact_precision": artifact.precision,
                      "parity_max_abs_diff": self._parity(cell, artifact, data, logits),
                      "lineage": artifact.lineage, "data_source": data.source, "train_rows": len(data.train),
                      "seeds": self._seeds()}
        except Exception as exc:
            return closed_rows(self.run_id, cell, self.suite, "failed", self.failures.describe(cell.cell_id, exc))
        timing_rows = next(iter(data.eval.values()))
        flops = self._flops(artifact)
        rows = []
        for batch_size, seq_len in shapes(self.suite):
            row = cell_row(self.run_id, cell, batch_size, seq_len, **common)
            try:
                batch = timing_batch(tokenizer, data.task, timing_rows, batch_size, seq_len, seed=self.suite.seed)
                timing = time_shape(session, batch, self.suite.measure)
                latency = timing["latency_ms"]
                row.update(timing, status="ok", flops=flops[seq_len] * batch_size if seq_len in flops else None,
                           throughput_per_s=batch_size * 1000.0 / latency["mean"])
                self.reporter.log(f"  batch {batch_size} x {seq_len}: p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms (n={latency['n']})")
            except Exception as exc:
                row.update(status="failed", reason=self.failures.describe(f"{cell.cell_id} batch {batch_size}", exc))
            rows.append(row)
        return rows

    def _flops(self, artifact: ModelArtifact) -> dict[int, int]:
        """FLOPs per example at each timed sequence length; a model the counter cannot take gets none, not a failure."""
        try:
            return flops_per_example(artifact, self.store, sorted({seq for _, seq in shapes(self.suite)}))
        except Exception as exc:
            self.reporter.log(f"  FLOPs not counted: {type(exc).__name__}: {exc}")
            return {}

    def _seeds(self) -> dict:
        """Every seed behind the row: the run's (builds, bootstrap, timing rows), the data subset's, the teacher's."""
        return {"run": self.suite.seed, "data": self.suite.data.seed, "teacher": self.suite.teacher.seed,
                "bootstrap": self.suite.seed}

    def _parity(self, cell: Cell, artifact: ModelArtifact, data: TaskData, logits) -> float | None:
        """Max |logit difference| against PyTorch fp32 on CPU for the same fp32 model and rows
        (None for PyTorch itself and for models that are not fp32 weights)."""
        if cell.backend.name == "torch" or artifact.precision != "fp32":
            return None
        path = self._reference_path(artifact, data)
        if not path.is_file():
            try:
                reference = BACKENDS.get("torch")().load(artifact, BackendOptions(name="torch"))
            except UnsupportedError:       # a format PyTorch cannot load: nothing to compare with
                return None
            try:
                rows = next(iter(data.eval.values()))
                expected, _ = split_logits(reference, artifact.tokenizer(), data, rows, self.suite.teacher.max_seq_len,
                                           self.suite.measure.eval_batch_size)
            finally:
                reference.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{id(self)}.npy")
            np.save(tmp, expected)
            tmp.replace(path)
        return max_abs_difference(logits, np.load(path))

    def _reference_path(self, artifact: ModelArtifact, data: TaskData) -> Path:
        key = stable_hash({"artifact": artifact.hash, "data": data.fingerprint, "max_seq_len": self.suite.teacher.max_seq_len,
                           "eval_batch_size": self.suite.measure.eval_batch_size})
        return self.store.root / REFERENCE_LOGITS_DIR / f"{key}.npy"


REFERENCE_LOGITS_DIR = "reference-logits"
