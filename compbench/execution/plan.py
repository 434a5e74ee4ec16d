"""Planning a run: which cells are finished already, which models must be built and in what order.

A (task, pipeline) is built when any of its cells is to be measured and the store lacks the
artifact its steps will produce (the hash is known before anything is built:
``compressors.chain.planned_hash``). The teacher is built first, and a pipeline whose steps
extend another's after it, so no two jobs build the same step at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from compbench.config.cells import Cell, shapes
from compbench.config.schema import BASELINE, PipelineConfig, Suite


@dataclass(frozen=True)
class Build:
    """One (task, pipeline) whose artifact the store lacks, and the hash it will have."""

    task: str
    pipeline: PipelineConfig
    artifact_hash: str


def complete_cells(rows: list[dict], suite: Suite) -> dict[str, list[dict]]:
    """Rows of the cells that need not run again: every shape present, none failed."""
    wanted = set(shapes(suite))
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["cell_id"], []).append(row)
    return {cell_id: cell_rows for cell_id, cell_rows in by_cell.items()
            if {(r["batch_size"], r["seq_len"]) for r in cell_rows} == wanted and len(cell_rows) == len(wanted)
            and all(r["status"] in ("ok", "skipped") for r in cell_rows)}


def cell_status(rows: list[dict]) -> str:
    statuses = {row["status"] for row in rows}
    return "failed" if "failed" in statuses else "ok" if "ok" in statuses else "skipped"


def pipelines_to_measure(suite: Suite, cells: list[Cell]) -> list[PipelineConfig]:
    """The suite's pipelines that have a cell among ``cells``, in suite order."""
    names = {cell.pipeline.name for cell in cells}
    return [pipeline for pipeline in suite.pipelines if pipeline.name in names]


def with_teacher_first(task: str, needed: list[Build], suite: Suite, teacher_hash: str,
                       teacher_cached: bool) -> list[Build]:
    """``needed`` plus the teacher's own build when it is not stored: every pipeline starts from it, and every
    cell compared with it is timed against it."""
    if teacher_cached or any(build.pipeline.name == BASELINE for build in needed):
        return needed
    baseline = next(p for p in suite.pipelines if p.name == BASELINE)
    return [*needed, Build(task, baseline, teacher_hash)]


def extends(pipeline: PipelineConfig, other: PipelineConfig) -> bool:
    """Whether ``pipeline``'s steps begin with all of ``other``'s (the baseline's none included)."""
    n = len(other.steps)
    return pipeline.name != other.name and n <= len(pipeline.steps) and pipeline.steps[:n] == other.steps


def build_waves(needed: list[Build]) -> list[list[Build]]:
    """Builds in waves: a pipeline after every pipeline being built whose steps it extends (the
    teacher first), so no two jobs build the same step at once; within a wave, any order."""
    level: dict[tuple[str, str], int] = {}
    for build in sorted(needed, key=lambda item: len(item.pipeline.steps)):
        below = [level[(build.task, other.pipeline.name)] for other in needed
                 if other.task == build.task and (build.task, other.pipeline.name) in level
                 and extends(build.pipeline, other.pipeline)]
        level[(build.task, build.pipeline.name)] = 1 + max(below, default=-1)
    waves: list[list[Build]] = [[] for _ in range(max(level.values()) + 1)]
    for build in needed:
        waves[level[(build.task, build.pipeline.name)]].append(build)
    return waves


def blocked_by(build: Build, failed: dict[tuple[str, str], str], suite: Suite) -> str | None:
    """Why ``build`` cannot be done: an earlier build it extends failed (None when none did)."""
    for (task, other), why in failed.items():
        other_pipeline = next(p for p in suite.pipelines if p.name == other)
        if task == build.task and extends(build.pipeline, other_pipeline):
            return f"its steps start with pipeline {other!r}, whose build failed: {why}"
    return None
