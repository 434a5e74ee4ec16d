"""The plan's unit: a cell is one (task, pipeline, backend); it is timed at every shape of the suite."""

from __future__ import annotations

from dataclasses import dataclass

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


def shapes(suite: Suite) -> list[tuple[int, int]]:
    """The (batch size, sequence length) pairs every cell is timed at: one row each."""
    return [(b, s) for b in suite.measure.batch_sizes for s in suite.measure.seq_lens]
