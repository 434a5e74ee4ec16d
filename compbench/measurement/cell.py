"""Measuring one cell: a built artifact on one backend -> one result row per timed shape.

A cell's rows hold its accuracy (scored through the session that is timed), its size as
deployed, its logit parity against PyTorch fp32, and per shape its latency and FLOPs. The
result cache stores them under :func:`cell_key`, which covers everything they depend on.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from compbench.backends.base import Session, StepReads
from compbench.cache.store import ArtifactStore
from compbench.common import envinfo
from compbench.common.errors import Failures, UnsupportedError
from compbench.common.hashing import files_hash, stable_hash
from compbench.common.imports import imported_closure
from compbench.common.locks import machine_timing_lock
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.config.cells import Cell, reference_backend, same_backend, shapes
from compbench.config.measure import NATURAL, NATURAL_BATCHES, Shape, shape_order
from compbench.config.schema import BASELINE, BackendConfig, Suite
from compbench.measurement.accuracy import evaluate_session
from compbench.measurement.flops import flops_per_example
from compbench.measurement.language import (
    GenerateCall,
    decoding_memory,
    generation_timing,
    language_quality,
    lm_tokenizer,
    prompt_batch,
)
from compbench.measurement.machine_load import LoadWatch
from compbench.measurement.natural import call_flops, first_batch, length_distribution
from compbench.measurement.parity import parity_max_abs_diff
from compbench.measurement.peak import measure_read_bandwidth
from compbench.measurement.timing import Call, cold_ms, device_costs, interleaved_calls, shape_timing
from compbench.models.artifact import ModelArtifact, files_size
from compbench.results.rows import cell_row, closed_rows, row_problem
from compbench.tasks.data import TaskData
from compbench.tasks.encoding import Batch, batch_list, natural_batches, timing_batch

# Bump when measuring changes what a row says for the same model and settings.
MEASURE_VERSION = "6"   # 2: p10, every timed call, labels, seeds, FLOPs; 3: causal LMs; 4: speedup_vs_reference;
# 5: step_bytes, the KV cache at its runtime dtype; 6: the natural-length shape
# Where a measurement starts: its modules and whatever they import (``code_fingerprint``) are the measuring code;
# the built-in backends are imported by name from their registry, so they start it too.
MEASURING_ENTRIES = ("compbench.measurement.cell", *BACKENDS.builtin_modules())
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def machine_fingerprint() -> dict:
    info = envinfo.collect()
    return {key: info[key] for key in ("cpu", "cpu_count", "cpu_affinity", "gpus", "packages", "python")}


def measuring_code(root: Path = PACKAGE_ROOT, entries: tuple[str, ...] = MEASURING_ENTRIES) -> dict[str, Path]:
    """The package's modules a measurement runs: ``entries`` and the closure of their imports (design.md: derived
    from the import graph, never kept by hand; the package's own version number never changes between commits,
    so it cannot stand for the code)."""
    return imported_closure(root, entries)


@lru_cache(maxsize=None)
def code_fingerprint(root: Path = PACKAGE_ROOT, entries: tuple[str, ...] = MEASURING_ENTRIES) -> str:
    """A hash of the measuring code: each module's path in the package and its bytes, in sorted order."""
    return stable_hash({path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                        for path in measuring_code(root, entries).values()})


def measured_identity(artifact: ModelArtifact) -> str:
    """What a measurement of ``artifact`` depends on: its recipe and the bytes it holds (its seal)."""
    return f"{artifact.hash}:{artifact.content_hash}"


def cell_key(suite: Suite, cell: Cell, artifact_id: str, data_fingerprint: str, reference_id: str | None) -> str:
    """The result cache's key of a cell: the model (and the teacher it is timed against; ``measured_identity``),
    backend and measure settings, the reference backend the teacher is also timed on (as resolved for this cell),
    rows, seed, machine, and the measuring code (compbench's and the backends', a plugin's too)."""
    served = reference_backend(suite, cell.backend)
    sources = sorted({str(inspect.getsourcefile(BACKENDS.get(name)))
                      for name in (cell.backend.name, *([served.name] if served else []))})
    return stable_hash({
        "version": MEASURE_VERSION, "artifact": artifact_id, "reference": reference_id,
        "backend": cell.backend.model_dump(),
        "threads": cell.backend.resolved_threads(), "measure": suite.measure.model_dump(), "data": data_fingerprint,
        "reference_backend": None if served is None else {**served.model_dump(), "label": served.label},
        "max_seq_len": suite.teacher.max_seq_len, "seed": suite.seed, "machine": machine_fingerprint(),
        "code": code_fingerprint(), "backend_code": files_hash([Path(source) for source in sources]),
    })


def served_rows_problem(rows: list, cell: Cell, cell_shapes: list[Shape],
                        artifact: ModelArtifact) -> str | None:
    """Why cached ``rows`` cannot be served as ``cell``'s measurement of ``artifact`` (None: they can): each
    must be a row (the contract), ``ok``, of this model's bytes and this backend, one per shape of the suite."""
    for row in rows:
        problem = row_problem(row)
        if problem:
            return problem
    options = cell.backend
    expected = {"status": "ok", "task": cell.task, "artifact_hash": artifact.hash,
                "artifact_content_hash": artifact.content_hash, "backend_label": options.label,
                "precision": options.precision, "device": options.device, "threads": options.resolved_threads()}
    for row in rows:
        wrong = [key for key, value in expected.items() if row.get(key) != value]
        if wrong:
            return f"a row of another measurement ({', '.join(f'{k}={row.get(k)!r}' for k in wrong)})"
    measured = sorted(((row["batch_size"], row["seq_len"]) for row in rows), key=shape_order)
    if measured != sorted(cell_shapes, key=shape_order):
        return f"rows for shapes {measured}, not the suite's {sorted(cell_shapes, key=shape_order)}"
    return None


def size_of(artifact: ModelArtifact, session: Session) -> dict:
    """Parameters as stored, and the bytes of the files the session deployed."""
    params, nonzero = artifact.parameter_counts()
    return {"size_bytes": files_size(session.deployed_files), "params": params, "nonzero_params": nonzero}


def runtime_of(cell: Cell, session: Session, artifact: ModelArtifact) -> dict:
    """What ran, as the session reads it back: ``runtime_precision`` (never the precision asked for when the engine
    chose another) and the session's ``runtime`` record."""
    info = session.runtime_info()
    default = BACKENDS.get(cell.backend.name)().compute_precision(cell.backend, artifact.precision)
    return {"runtime_precision": info.get("precision", default), "runtime": info or None}


@dataclass
class Partner:
    """A teacher loaded to time a cell's model against: its session, its own encoding of the timing rows per shape,
    its tokenizer, and the torch threads to pin before each of its calls (None: no pinning needed)."""

    session: Session
    batches: dict[tuple[int, int], Batch]
    tokenizer: object
    threads: int | None = None

    def call(self, shape: tuple[int, int]) -> Call:
        return Call.of(self.session, self.batches[shape], self.threads)


@dataclass
class VersusReference:
    """How a cell's model is read against the teacher on the suite's reference backend (``label``): timed with the
    teacher loaded there (``partner``), or the same timing as the own-backend speed-up (``shared``: the teacher on
    the cell's backend at fp32 is the reference), or 1 by definition (``identity``: the cell is the teacher on the
    reference), or not at all (``reason``)."""

    label: str | None
    partner: Partner | None = None
    shared: bool = False
    identity: bool = False
    reason: str | None = None

    def record(self, measured: dict | None, own_speedup: dict | None, resolution: float) -> dict:
        """The row's ``speedup_vs_reference``: ``ratio`` (the reference's median over the model's), ``ci95``,
        ``reference`` (the reference's backend label) and ``source`` (``timed``: interleaved in this cell;
        ``same-as-speedup``: the own-backend teacher is the reference; ``is-reference``: the row is the reference,
        1 by definition), and the timing fields a ``speedup`` has; ``ratio`` None with the ``reason`` when not
        timed against it."""
        if measured:
            return {**measured, "reference": self.label, "source": "timed"}
        if self.identity:
            return {"ratio": 1.0, "ci95": [1.0, 1.0], "pairs": 0, "interleaved": False, "resolution": resolution,
                    "reference": self.label, "source": "is-reference"}
        if self.shared and own_speedup:
            return {**own_speedup, "reference": self.label, "source": "same-as-speedup"}
        return {"ratio": None, "ci95": None, "reference": self.label, "source": None,
                "reason": self.reason or "the teacher on the reference backend was not timed"}

    def close(self) -> None:
        if self.partner is not None:
            self.partner.session.close()


class CellMeasurement:
    """Measures cells of one run: the cold call first, then accuracy through the timed session, size, logit
    parity against PyTorch fp32, device costs with the model alone, and per shape the latency, timed
    interleaved with the teacher on the same backend when the cell is compared with it and with the teacher on the
    suite's reference backend (the model as served today)."""

    def __init__(self, suite: Suite, run_id: str, store: ArtifactStore, reporter: Reporter, failures: Failures) -> None:
        self.suite, self.run_id, self.store, self.reporter, self.failures = suite, run_id, store, reporter, failures

    def measure(self, cell: Cell, artifact: ModelArtifact, data: TaskData,
                reference: ModelArtifact | None = None) -> list[dict]:
        """The cell's rows; ``reference`` (the teacher, for a cell compared with it) is timed alongside, and the
        teacher (``reference``, or the baseline cell's own model) on the suite's reference backend too."""
        backend = BACKENDS.get(cell.backend.name)()
        availability = backend.availability(cell.backend)
        if not availability.ok:
            return self._closed(cell, "skipped", availability.reason)
        self.reporter.log(f"{cell.cell_id}: measuring")
        teacher = reference if reference is not None else artifact if cell.pipeline.name == BASELINE else None
        # one timing at a time on this machine (other runs wait), and a record of what else kept it busy
        with machine_timing_lock(self.reporter.waiting), LoadWatch() as load:
            try:
                session = backend.load(artifact, cell.backend)
            except UnsupportedError as exc:
                return self._closed(cell, "skipped", str(exc))
            except Exception as exc:
                return self._closed(cell, "failed", self.failures.describe(cell.cell_id, exc))
            start = time.time()
            try:
                rows = self._measure_session(cell, session, artifact, data, reference, teacher)
            finally:
                session.close()
        held = {"start": start, "end": time.time()}        # epoch seconds: when the cell held the machine
        machine_load = load.summary()
        if machine_load["quiet"] is False:
            self.reporter.log(f"  the machine was busy: other processes used {machine_load['other_cores']:.2f} "
                              "cores meanwhile; the timings may be slow and are not cached")
        for row in rows:
            row.update(measured_at=held, machine_load=machine_load)
        return rows

    def _measure_session(self, cell: Cell, session: Session, artifact: ModelArtifact, data: TaskData,
                         reference: ModelArtifact | None, teacher: ModelArtifact | None) -> list[dict]:
        language = data.task.is_language_modeling
        try:
            tokenizer = lm_tokenizer(artifact, session) if language else artifact.tokenizer()
            batches = self._timing_batches(tokenizer, data)
            cold = {shape: cold_ms(session, first_batch(batch)) for shape, batch in batches.items()}   # before all
            common = self._shape_independent(cell, session, artifact, tokenizer, data)
            costs = {shape: device_costs(session, first_batch(batch), self.suite.measure)
                     for shape, batch in batches.items()}
            if language:    # with the model alone loaded; bandwidth is read against the decoding speed
                common["memory_bandwidth"] = measure_read_bandwidth(cell.backend.device,
                                                                    cell.backend.resolved_threads())
                reads = self._step_reads(session)
                memory = {shape: decoding_memory(session, tokenizer, batch, self.suite.measure.generation, reads)
                          for shape, batch in batches.items()}
        except UnsupportedError as exc:     # what cannot run here, found at its first call (a shape inductor fails on)
            return self._closed(cell, "skipped", str(exc))
        except Exception as exc:
            return self._closed(cell, "failed", self.failures.describe(cell.cell_id, exc))
        flops = self._flops(artifact, batches)
        partner = self._reference_session(cell, reference, data)
        versus = self._versus_reference(cell, teacher, partner, data)
        try:
            rows = [self._timed_row(cell, session, partner, versus, batches[shape], shape,
                                    {**common, **costs[shape]}, cold[shape], flops) for shape in batches]
            if language:
                for shape, row in zip(batches, rows):
                    self._generation(cell, session, tokenizer, partner, versus, batches[shape], shape, row,
                                     memory[shape])
            return rows
        finally:
            if partner is not None:
                partner.session.close()
            versus.close()

    def _generation(self, cell: Cell, session: Session, tokenizer, partner: Partner | None, versus: VersusReference,
                    batch: Batch, shape: tuple[int, int], row: dict, memory: dict) -> None:
        """A causal LM's decoding at one shape, timed interleaved with the teacher's (on the cell's backend, and on
        the reference backend) where there is one; a failure fails the row, with why."""
        if row["status"] != "ok":
            return
        try:
            config = self.suite.measure.generation
            pin = self._pin(cell, versus)
            reference = (GenerateCall.of(partner.session, partner.tokenizer, partner.batches[shape],
                                         config.new_tokens, pin) if partner else None)
            served, versus_here = None, versus
            if versus.partner is not None:
                try:
                    served = GenerateCall.of(versus.partner.session, versus.partner.tokenizer,
                                             versus.partner.batches[shape], config.new_tokens, versus.partner.threads)
                except Exception as exc:    # e.g. a reference backend that does not generate: timed without it
                    why = f"the teacher on {versus.label} cannot generate ({type(exc).__name__}: {exc})"
                    self.reporter.log(f"  {why}; decoding timed without it")
                    versus_here = VersusReference(versus.label, reason=why)
            row["generation"] = {**generation_timing(session, tokenizer, batch, reference, config,
                                                     self.suite.measure, self.suite.seed, served=served,
                                                     threads=pin), **memory}
            g = row["generation"]
            g["speedup_vs_reference"] = versus_here.record(g.get("speedup_vs_reference"), g.get("speedup"),
                                                           self.suite.measure.target_precision)
            self.reporter.log(f"  generate {shape[0]} x {shape[1]} + {g['new_tokens']}: first token "
                              f"{g['ttft_ms']['p50']:.1f} ms, {g['time_per_token_ms']:.2f} ms a token, "
                              f"{g['tokens_per_s']:.1f} tokens/s, peak RSS {g['peak_rss_bytes'] / 2**20:.0f} MiB"
                              f"{_versus_text(g['speedup_vs_reference'])}")
        except Exception as exc:
            row.update(status="failed", reason=self.failures.describe(f"{cell.cell_id} generate {shape}", exc))

    def _timing_batches(self, tokenizer, data: TaskData) -> dict[Shape, Batch | list[Batch]]:
        """Each shape's batch: real evaluation rows, padded (or cut) to the shape's length, seeded; at the natural
        length ``NATURAL_BATCHES`` seeded batches of them, each padded to its longest row (cut at the teacher's
        max_seq_len); for a causal LM prompts of exactly the shape's length, cut from the corpus."""
        seed = self.suite.seed
        if data.task.is_language_modeling:
            documents = data.eval["validation"]["text"].tolist()
            return {(b, s): prompt_batch(tokenizer, documents, b, s, seed=seed) for b, s in shapes(self.suite)}
        rows = next(iter(data.eval.values()))
        return {(b, s): natural_batches(tokenizer, data.task, rows, b, self.suite.teacher.max_seq_len, seed,
                                        NATURAL_BATCHES)
                if s == NATURAL else timing_batch(tokenizer, data.task, rows, b, s, seed=seed)
                for b, s in shapes(self.suite)}

    def _shape_independent(self, cell: Cell, session: Session, artifact: ModelArtifact, tokenizer,
                           data: TaskData) -> dict:
        """What every row of the cell shares: accuracy (a causal LM: perplexity and zero-shot accuracy), size,
        parity, provenance."""
        suite = self.suite
        if data.task.is_language_modeling:
            quality = language_quality(session, tokenizer, data, suite.task_entry(cell.task), suite.measure,
                                       suite.seed)
            parity = None       # the perplexity, against the baseline's, is a causal LM's check
        else:
            quality, logits = evaluate_session(session, tokenizer, data, suite.teacher.max_seq_len, suite.measure,
                                               suite.seed)
            parity = parity_max_abs_diff(cell.backend, artifact, data, logits, self.store,
                                         suite.teacher.max_seq_len, suite.measure.eval_batch_size)
        return {**size_of(artifact, session), **quality, **runtime_of(cell, session, artifact),
                "artifact": str(artifact.path),
                "artifact_hash": artifact.hash, "artifact_content_hash": artifact.content_hash,
                "artifact_format": artifact.format, "artifact_kind": artifact.kind,
                "artifact_precision": artifact.precision,
                "parity_max_abs_diff": parity, "lineage": artifact.lineage, "data_source": data.source,
                "dropped_rows": data.drop_reasons,
                "train_rows": len(data.train), "seeds": self._seeds()}

    def _reference_session(self, cell: Cell, reference: ModelArtifact | None, data: TaskData) -> Partner | None:
        """The teacher on this backend at fp32, loaded after the cell's own model has been measured alone, with
        its own encoding of the same timing rows (and its tokenizer); None (timed alone, no speed-up) when it cannot
        be loaded."""
        if reference is None:
            return None
        try:
            return self._partner(reference, cell.backend.model_copy(update={"precision": "fp32"}), data)
        except Exception as exc:
            self.reporter.log(f"  the teacher could not be loaded to time against ({type(exc).__name__}: {exc}); "
                              "timed alone, no speed-up")
            return None

    def _partner(self, teacher: ModelArtifact, options: BackendConfig, data: TaskData,
                 threads: int | None = None) -> Partner:
        session = BACKENDS.get(options.name)().load(teacher, options)
        try:
            tokenizer = lm_tokenizer(teacher, session) if teacher.is_causal_lm else teacher.tokenizer()
            return Partner(session, self._timing_batches(tokenizer, data), tokenizer, threads)
        except Exception:
            session.close()
            raise

    def _versus_reference(self, cell: Cell, teacher: ModelArtifact | None, partner: Partner | None,
                          data: TaskData) -> VersusReference:
        """The teacher on the suite's reference backend (as resolved for this cell), loaded to time the cell's model
        against, unless the cell is that reference or its own-backend teacher is; a reference that cannot run here
        leaves the cell timed without it, with the reason (logged, and in the rows)."""
        served = reference_backend(self.suite, cell.backend)
        if served is None:
            return VersusReference(None, reason="the suite sets no reference_backend")
        label = served.label
        if teacher is None:
            return VersusReference(label, reason="no teacher to time against")
        if cell.is_reference and same_backend(cell.backend, served):
            return VersusReference(label, identity=True)
        own = cell.backend.model_copy(update={"precision": "fp32"})
        if same_backend(own, served):
            if partner is not None:
                return VersusReference(label, shared=True)
            return VersusReference(label, reason=f"the teacher on {label} could not be loaded")
        availability = BACKENDS.get(served.name)().availability(served)
        if not availability.ok:
            why = f"the reference backend {label} cannot run here: {availability.reason}"
            self.reporter.log(f"  {why}; timed without it")
            return VersusReference(label, reason=why)
        threads = served.resolved_threads()
        pin = threads != cell.backend.resolved_threads()        # torch's threads are process-wide: set per call
        try:
            loaded = self._partner(teacher, served, data, threads if pin else None)
        except Exception as exc:
            why = f"the teacher could not be loaded on the reference backend {label} ({type(exc).__name__}: {exc})"
            self.reporter.log(f"  {why}; timed without it")
            return VersusReference(label, reason=why)
        return VersusReference(label, partner=loaded)

    @staticmethod
    def _pin(cell: Cell, versus: VersusReference) -> int | None:
        """The torch threads the cell's own calls set first: where the reference runs at other threads and pins its
        own (torch's thread count is process-wide), the cell's; else None (each session set them when loaded)."""
        return (cell.backend.resolved_threads() if versus.partner is not None and versus.partner.threads is not None
                else None)

    def _timed_row(self, cell: Cell, session: Session, partner: Partner | None, versus: VersusReference,
                   batch: Batch | list[Batch], shape: Shape, common: dict, cold: float, flops: dict[int, int]) -> dict:
        """The row of one shape: latency (interleaved with the teacher on this backend and on the reference backend,
        where there are), the speed-ups, FLOPs; at the natural length also the lengths its timed calls ran."""
        batch_size, seq_len = shape
        row = cell_row(self.run_id, cell, batch_size, seq_len, **common)
        try:
            pin = self._pin(cell, versus)
            references = ([Call.of(partner.session, partner.batches[shape], pin)] if partner is not None else []) + (
                [versus.partner.call(shape)] if versus.partner is not None else [])
            model = Call.of(session, batch, pin)
            model_ms, references_ms = interleaved_calls(model, references, self.suite.measure)
            own_ms = references_ms[0] if partner is not None else []
            served_ms = references_ms[-1] if versus.partner is not None else None
            timing = shape_timing(model_ms, own_ms, cold, self.suite.measure, self.suite.seed, served_ms)
            timing["speedup_vs_reference"] = versus.record(timing.get("speedup_vs_reference"), timing.get("speedup"),
                                                           self.suite.measure.target_precision)
            latency = timing["latency_ms"]
            timed = model.ran[-len(model_ms):]      # the batch of each timed call (warm-up calls left out)
            if seq_len == NATURAL:
                row["natural_lengths"] = length_distribution(batch, timed, self.suite.teacher.max_seq_len)
            row.update(timing, status="ok", flops=call_flops(flops, batch, timed, batch_size),
                       throughput_per_s=batch_size * 1000.0 / latency["mean"])
            speedup = timing.get("speedup")
            against = (f", {speedup['ratio']:.2f}x the teacher [{speedup['ci95'][0]:.2f}, {speedup['ci95'][1]:.2f}]"
                       if speedup else "")
            self.reporter.log(f"  batch {batch_size} x {seq_len}: p50 {latency['p50']:.2f} ms, "
                              f"p90 {latency['p90']:.2f} ms (n={latency['n']}){against}"
                              f"{_versus_text(timing['speedup_vs_reference'])}")
        except Exception as exc:
            row.update(status="failed", reason=self.failures.describe(f"{cell.cell_id} batch {batch_size}", exc))
        return row

    def _step_reads(self, session: Session) -> StepReads | None:
        """The bytes a decoding step reads, as the session counts them; a model it cannot count gets no bandwidth
        roof, not a failure."""
        try:
            return session.step_reads()
        except Exception as exc:
            self.reporter.log(f"  the bytes a decoding step reads were not counted: {type(exc).__name__}: {exc}")
            return None

    def _flops(self, artifact: ModelArtifact, batches: dict[Shape, Batch | list[Batch]]) -> dict[int, int]:
        """FLOPs per example at each padded length timed (a natural shape's: each of its batches' widths); a model
        the counter cannot take gets none, not a failure."""
        widths = {batch["input_ids"].shape[1] for inputs in batches.values() for batch in batch_list(inputs)}
        try:
            return flops_per_example(artifact, self.store, sorted(widths))
        except Exception as exc:
            self.reporter.log(f"  FLOPs not counted: {type(exc).__name__}: {exc}")
            return {}

    def _seeds(self) -> dict:
        """Every seed behind the row: the run's (builds, bootstrap, timing rows), the data subset's, the teacher's."""
        return {"run": self.suite.seed, "data": self.suite.data.seed, "teacher": self.suite.teacher.seed,
                "bootstrap": self.suite.seed}

    def _closed(self, cell: Cell, status: str, reason: str) -> list[dict]:
        return closed_rows(self.run_id, cell, shapes(self.suite), status, reason)


def _versus_text(versus: dict) -> str:
    """The log's words for a ``speedup_vs_reference``."""
    if versus.get("ratio") is None:
        return ""
    if versus["source"] == "is-reference":
        return f" (the reference, {versus['reference']})"
    low, high = versus["ci95"]
    return f", {versus['ratio']:.2f}x the teacher on {versus['reference']} [{low:.2f}, {high:.2f}]"
