"""PNG plots of one run: per task, metric vs the speed-up measured against the teacher on the reference backend (one
panel per shape; where rows carry it), metric vs latency (one panel per shape) and metric vs size on disk; for a
causal LM also metric vs decoding speed (one panel per shape: time per output token, tokens/s on the top axis).

Input is a frame of *ok* measurement rows (one per task, pipeline, backend, batch_size, seq_len).
Only the columns in ``COLUMNS`` are read; any others are ignored. Each point is one
(pipeline, backend_label) combination: its marker shape names the pipeline, its colour the backend.
The Pareto front (lower x, or higher for the speed-up, and the better metric: higher, or lower for perplexity) is
drawn as a dashed grey step line and its points are ringed. The latency and decoding plots draw none: medians of
cells timed apart do not rank models (their measured speed-ups against the one reference do). Rendering uses
matplotlib's object API on an Agg canvas: no pyplot, no display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogFormatter

from compbench.common.statistics import TIMING_RESOLUTION
from compbench.config.measure import NATURAL, shape_order
from compbench.results.pareto import front_order
from compbench.tasks.metrics import higher_is_better

COLUMNS = (
    "task", "pipeline", "backend_label", "batch_size", "seq_len",
    "metric_name", "metric", "metric_ci95_low", "metric_ci95_high",
    "latency_p50_ms", "latency_p10_ms", "latency_p90_ms", "size_bytes", "gen_time_per_token_ms",
    "speedup_vs_reference_p50", "speedup_vs_reference_ci95_low", "speedup_vs_reference_ci95_high",
)
# Whisker bounds: filled with NaN (no whisker) when a frame lacks them, e.g. rows written before p10 was recorded;
# decoding speed exists for causal LMs only.
OPTIONAL = ("latency_p10_ms", "latency_p90_ms", "metric_ci95_low", "metric_ci95_high", "gen_time_per_token_ms",
            "speedup_vs_reference_p50", "speedup_vs_reference_ci95_low", "speedup_vs_reference_ci95_high")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
DPI = 120
MARKER_SIZE = 10.0
MIN_MARKER_SIZE = 5.0
PANEL_WIDTH_IN = 5.0
PANEL_HEIGHT_IN = 4.0
LEGEND_WIDTH_IN = 2.6
MAX_COLUMNS = 3
FRONT_COLOUR = "0.45"


@dataclass(frozen=True)
class Style:
    """How points look: ``markers`` maps pipeline -> marker, ``colours`` and ``sizes`` map backend_label ->
    colour and marker size (points). Later backends get smaller markers, so that the same pipeline on two
    backends at (nearly) the same spot shows as one marker nested in the other instead of hiding it."""

    markers: dict[str, str]
    colours: dict[str, tuple[float, float, float, float]]
    sizes: dict[str, float]


@dataclass(frozen=True)
class Axis:
    """One panel's x axis: ``value`` column, optional whisker columns ``low``/``high``, its label, and which way the
    Pareto front's x is better (``lower``, ``higher``; None: no front is drawn)."""

    value: str
    low: str | None
    high: str | None
    label: str
    log: bool
    front: str | None = "lower"


def write_plots(frame: pd.DataFrame, out_dir: Path) -> dict[str, list[Path]]:
    """Write ``<task>-metric-vs-latency.png`` and ``<task>-metric-vs-size.png`` per task, and
    ``<task>-metric-vs-speedup.png`` where its rows carry a speed-up against the reference; return the paths by
    task."""
    out_dir = Path(out_dir)
    missing = [c for c in COLUMNS if c not in frame.columns and c not in OPTIONAL]
    if missing:
        raise KeyError(f"plot frame lacks columns: {missing}")
    frame = frame.reindex(columns=list(COLUMNS))
    written: dict[str, list[Path]] = {}
    for task in _in_order(frame["task"]):
        task_frame = frame[frame["task"] == task]
        if task_frame.empty:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        style = task_style(task_frame)
        stem = _safe_name(str(task))
        written[task] = [
            _save(_latency_figure(task_frame, style), out_dir / f"{stem}-metric-vs-latency.png"),
            _save(_size_figure(task_frame, style), out_dir / f"{stem}-metric-vs-size.png"),
        ]
        measured = task_frame[task_frame["speedup_vs_reference_p50"].notna()]
        if not measured.empty:
            written[task].insert(0, _save(_speedup_figure(measured, style), out_dir / f"{stem}-metric-vs-speedup.png"))
        decoding = task_frame[task_frame["gen_time_per_token_ms"].notna()]
        if not decoding.empty:
            written[task].append(_save(_decoding_figure(decoding, style), out_dir / f"{stem}-metric-vs-decoding.png"))
    return written


def task_style(task_frame: pd.DataFrame) -> Style:
    """Markers per pipeline; tab10/tab20 colours and shrinking sizes per backend; all in order of first appearance."""
    pipelines = _in_order(task_frame["pipeline"])
    backends = _in_order(task_frame["backend_label"])
    cmap = colormaps["tab10" if len(backends) <= 10 else "tab20"]
    return Style(
        markers={p: MARKERS[i % len(MARKERS)] for i, p in enumerate(pipelines)},
        colours={b: cmap(i % cmap.N) for i, b in enumerate(backends)},
        sizes={b: max(MARKER_SIZE - 2.0 * i, MIN_MARKER_SIZE) for i, b in enumerate(backends)},
    )


def row_shapes(task_frame: pd.DataFrame) -> list[tuple]:
    """Each row's (batch size, length), as plain ints (or ``natural``)."""
    return [(int(b), s if s == NATURAL else int(s)) for b, s in zip(task_frame["batch_size"], task_frame["seq_len"])]


def frame_shapes(task_frame: pd.DataFrame) -> list[tuple]:
    """The frame's (batch size, length) shapes in order: fixed lengths, then the natural one."""
    return sorted(set(row_shapes(task_frame)), key=shape_order)


def _latency_figure(task_frame: pd.DataFrame, style: Style) -> Figure:
    """One panel per (batch_size, seq_len): metric vs p50 latency with p10..p90 whiskers."""
    axis = Axis("latency_p50_ms", "latency_p10_ms", "latency_p90_ms",
                "p50 latency per batch (ms, log scale)\nwhiskers: p10..p90", log=True, front=None)
    return _per_shape_figure(task_frame, style, axis, "latency")


def _speedup_figure(task_frame: pd.DataFrame, style: Style) -> Figure:
    """One panel per (batch_size, seq_len): metric vs the speed-up measured against the teacher on the reference
    backend (interleaved in each row's job) with its paired 95% interval; the front: faster and better."""
    axis = Axis("speedup_vs_reference_p50", "speedup_vs_reference_ci95_low", "speedup_vs_reference_ci95_high",
                "speed-up vs the teacher on the reference backend (x, log scale)\nmeasured interleaved; whiskers: "
                "95% CI", log=True, front="higher")
    return _per_shape_figure(task_frame, style, axis, "measured speed-up")


def _per_shape_figure(task_frame: pd.DataFrame, style: Style, axis: Axis, what: str) -> Figure:
    shapes = frame_shapes(task_frame)
    fig, axes = _figure(len(shapes))
    for ax, (batch, seq) in zip(axes, shapes):
        panel = task_frame[(task_frame["batch_size"] == batch) & (task_frame["seq_len"] == seq)]
        draw_panel(ax, panel, axis, style)
        ax.set_title(f"batch {batch} x {seq} tokens" if seq != NATURAL else
                     f"batch {batch}, natural lengths (padded to each batch's longest)")
    _finish(fig, axes, task_frame, style, what)
    return fig


def _decoding_figure(task_frame: pd.DataFrame, style: Style) -> Figure:
    """One panel per (batch_size, prompt tokens): metric vs time per output token (tokens/s on the top axis)."""
    shapes = frame_shapes(task_frame)
    axis = Axis("gen_time_per_token_ms", None, None, "time per output token (ms, log scale)", log=True, front=None)
    fig, axes = _figure(len(shapes))
    for ax, (batch, seq) in zip(axes, shapes):
        panel = task_frame[(task_frame["batch_size"] == batch) & (task_frame["seq_len"] == seq)]
        draw_panel(ax, panel, axis, style)
        top = ax.secondary_xaxis("top", functions=(lambda ms, b=batch: b * 1000.0 / np.maximum(ms, 1e-9),
                                                   lambda tps, b=batch: b * 1000.0 / np.maximum(tps, 1e-9)))
        top.set_xlabel("decode tokens/s")
        ax.set_title(f"batch {batch}, {seq}-token prompts")
    _finish(fig, axes, task_frame, style, "decoding speed")
    return fig


def _size_figure(task_frame: pd.DataFrame, style: Style) -> Figure:
    """One panel: metric vs size on disk in MB, one point per (pipeline, backend_label)."""
    rank = {shape: index for index, shape in enumerate(frame_shapes(task_frame))}
    points = (task_frame.assign(shape_rank=[rank[shape] for shape in row_shapes(task_frame)])
              .sort_values("shape_rank", kind="stable")
              .drop_duplicates(["pipeline", "backend_label"], keep="first")
              .assign(size_mb=lambda d: d["size_bytes"].astype(float) / 1e6))
    sizes = points["size_mb"].to_numpy(dtype=float)
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    log = sizes.size > 0 and sizes.max() / sizes.min() > 3
    axis = Axis("size_mb", None, None, "size on disk (MB, log scale)" if log else "size on disk (MB)", log=log)
    fig, axes = _figure(1)
    draw_panel(axes[0], points, axis, style)
    _finish(fig, axes, task_frame, style, "size on disk")
    return fig


def draw_panel(ax: Axes, panel: pd.DataFrame, axis: Axis, style: Style) -> None:
    """Draw every row of ``panel`` as one point with x/CI whiskers, then its Pareto front on top."""
    x = panel[axis.value].to_numpy(dtype=float)
    y = panel["metric"].to_numpy(dtype=float)
    xerr = _whiskers(x, panel, axis.low, axis.high)
    yerr = _whiskers(y, panel, "metric_ci95_low", "metric_ci95_high")
    for i, (pipeline, backend) in enumerate(zip(panel["pipeline"], panel["backend_label"])):
        ax.errorbar(x[i], y[i], xerr=xerr[:, i:i + 1], yerr=yerr[:, i:i + 1],
                    marker=style.markers[pipeline], color=style.colours[backend], markersize=style.sizes[backend],
                    markeredgecolor="black", markeredgewidth=0.6, elinewidth=1.1, capsize=2.5,
                    ecolor=(*style.colours[backend][:3], 0.55), linestyle="none",
                    zorder=3 + 0.01 * list(style.sizes).index(backend))  # smaller markers on top
    better = panel["metric_name"].map(higher_is_better).all()
    front = []
    if axis.front is not None:                      # the front's cost: lower is better; its score: higher
        # a speed-up's cost is its reciprocal; speed-ups within the timing's resolution are one speed
        front = (front_order(x, y if better else -y) if axis.front == "lower"
                 else front_order(1 / x, y if better else -y, TIMING_RESOLUTION))
    if front:
        ax.step(x[front], y[front], where="post", linestyle="--", color=FRONT_COLOUR, linewidth=1.3, zorder=2)
        ax.scatter(x[front], y[front], s=300, facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.6, zorder=4)
    if axis.log:
        _plain_log_x(ax)
    ax.set_xlabel(axis.label)
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0.12, y=0.12)


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which minor log ticks to label, written as plain numbers: its own writes those below 1
    as ``6e-01``."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def _plain_log_x(ax: Axes) -> None:
    """Log x axis with ticks written as plain numbers (0.6, 20, 50, 200) rather than 2x10^1 or 6e-01."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _whiskers(centre: np.ndarray, panel: pd.DataFrame, low: str | None, high: str | None) -> np.ndarray:
    """2 x n array of (below, above) whisker lengths; a NaN or missing bound gives no whisker on that side."""
    def side(column: str | None, sign: float) -> np.ndarray:
        if column is None:
            return np.zeros_like(centre)
        bound = panel[column].to_numpy(dtype=float)
        length = sign * (bound - centre)
        return np.where(np.isfinite(length) & (length > 0), length, 0.0)

    return np.vstack([side(low, -1.0), side(high, 1.0)])


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes sharing y, at most ``MAX_COLUMNS`` per row, plus room for legends."""
    cols = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(PANEL_WIDTH_IN * cols + LEGEND_WIDTH_IN, PANEL_HEIGHT_IN * rows + 0.6),
                 dpi=DPI, layout="constrained")
    grid = fig.subplots(rows, cols, sharey=True, squeeze=False)
    flat = list(grid.ravel())
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _finish(fig: Figure, axes: list[Axes], task_frame: pd.DataFrame, style: Style, what: str) -> None:
    """Title, y labels on the first column, and the pipeline/backend legends outside the axes on the right."""
    metric = " / ".join(str(m) for m in _in_order(task_frame["metric_name"]))
    task = task_frame["task"].iloc[0]
    # Left-aligned so that a long title never runs into the legends on the right.
    fig.suptitle(f"{task}: {metric} vs {what}", x=0.01, ha="left", fontsize=13, fontweight="bold")
    cols = min(len(axes), MAX_COLUMNS)
    for i, ax in enumerate(axes):
        ax.tick_params(labelleft=True)
        if i % cols == 0:
            ax.set_ylabel(f"{metric} (95% CI)")
    pipelines = _in_order(task_frame["pipeline"])
    backends = _in_order(task_frame["backend_label"])
    fig.legend(handles=_pipeline_handles(pipelines, style), title="pipeline (marker)",
               loc="outside right upper", alignment="left", frameon=False)
    fig.legend(handles=_backend_handles(backends, style), title="backend (colour)",
               loc="outside right lower", alignment="left", frameon=False)


def _pipeline_handles(pipelines: Iterable[str], style: Style) -> list[Line2D]:
    """Black markers, one per pipeline, plus one entry explaining the Pareto front line and rings."""
    handles = [Line2D([], [], marker=style.markers[p], color="black", linestyle="none", markersize=9, label=p)
               for p in pipelines]
    handles.append(Line2D([], [], marker="o", markersize=13, markerfacecolor="none", markeredgecolor=FRONT_COLOUR,
                          markeredgewidth=1.6, color=FRONT_COLOUR, linestyle="--", label="Pareto front"))
    return handles


def _backend_handles(backends: Iterable[str], style: Style) -> list[Line2D]:
    """Filled squares, one per backend, in the backend's colour and marker size."""
    return [Line2D([], [], marker="s", color=style.colours[b], markeredgecolor="black", markeredgewidth=0.6,
                   linestyle="none", markersize=style.sizes[b] - 1, label=b) for b in backends]


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to a PNG at ``path`` with an Agg canvas (tight bounding box) and release it."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    fig.clear()
    return path


def _in_order(values: Iterable) -> list:
    """Distinct non-null values in order of first appearance."""
    return [v for v in dict.fromkeys(values) if not (isinstance(v, float) and math.isnan(v))]


def _safe_name(name: str) -> str:
    """``name`` with anything other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "task"
