"""The plan's unit: a cell is one (task, pipeline, backend); it is timed at every shape of the suite.

Each cell's model is also timed against the teacher on the suite's reference backend (the model as served today):
:func:`reference_backend` is that backend for one cell, :func:`same_backend` whether two entries run alike."""

from __future__ import annotations

from dataclasses import dataclass

from compbench.common.plugins import BACKENDS
from compbench.config.backends import PROFILES, BackendOptions
from compbench.config.measure import Shape
from compbench.config.schema import BASELINE, BackendConfig, PipelineConfig, Suite


@dataclass(frozen=True)
class Cell:
    """One (task, pipeline, backend) combination: it yields one row per shape."""

    task: str
    pipeline: PipelineConfig
    backend: BackendConfig

    @property
    def cell_id(self) -> str:
        return f"{self.task}/{self.pipeline.name}/{self.backend.label}"

    @property
    def is_reference(self) -> bool:
        """The teacher on an fp32 backend: what the cell's neighbours are compared with (and timed against)."""
        return self.pipeline.name == BASELINE and self.backend.precision == "fp32"


def expand(suite: Suite) -> list[Cell]:
    return [Cell(t, p, b) for t in suite.task_names for p in suite.pipelines for b in suite.backends if p.runs_on(b)]


def shapes(suite: Suite) -> list[Shape]:
    """The (batch size, sequence length) pairs every cell is timed at, one row each; a length may be ``natural``."""
    return [(b, s) for b in suite.measure.batch_sizes for s in suite.measure.seq_lens]


def reference_backend(suite: Suite, backend: BackendOptions) -> BackendConfig | None:
    """The backend entry the teacher runs on as the reference of a cell on ``backend``: the suite's
    ``reference_backend`` with the device and threads it leaves out taken from the cell (threads: the reference's
    profile's first, e.g. ``edge``'s 1), threads always written out; None when the suite sets none."""
    given = suite.reference_backend
    if given is None:
        return None
    threads = given.threads or PROFILES.get(given.profile, {}).get("threads") or backend.resolved_threads()
    return BackendConfig(name=given.name, device=given.device or backend.device, profile=given.profile,
                         threads=threads, precision=given.precision, options=dict(given.options))


def same_backend(a: BackendOptions, b: BackendOptions) -> bool:
    """Whether two entries run a model alike: the same backend, device, precision, resolved threads and options
    (as the backend's ``Options`` validate them, defaults filled in); profiles and labels may differ."""
    if (a.name, a.device, a.precision, a.resolved_threads()) != (b.name, b.device, b.precision, b.resolved_threads()):
        return False
    return _options(a) == _options(b)


def _options(entry: BackendOptions) -> dict:
    try:
        return BACKENDS.get(entry.name).Options.model_validate(entry.options).model_dump()
    except Exception:   # validated with the suite; a mismatch here only means "not the same"
        return dict(entry.options)
