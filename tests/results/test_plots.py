"""Pareto fronts and the per-task PNG plots, on hand-made data (no models, no run directory)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from compbench.results.pareto import front_order, pareto_mask
from compbench.results.plots import write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")

# --- Pareto front ---------------------------------------------------------------------------------


def test_pareto_mask_known_front():
    cost = [1, 2, 3, 4, 2, 5]
    score = [0.80, 0.85, 0.84, 0.90, 0.70, 0.90]
    # (3, .84) is beaten by (2, .85); (2, .70) by (2, .85); (5, .90) by (4, .90) (same score, cheaper).
    assert pareto_mask(cost, score).tolist() == [True, True, False, True, False, False]


def test_pareto_mask_identical_points_both_on_front():
    assert pareto_mask([1, 1, 2], [0.5, 0.5, 0.6]).tolist() == [True, True, True]
    # Same cost, lower score: dominated. Same score, higher cost: dominated.
    assert pareto_mask([1, 1], [0.5, 0.4]).tolist() == [True, False]
    assert pareto_mask([1, 2], [0.5, 0.5]).tolist() == [True, False]


def test_pareto_mask_nan_never_on_front_and_never_dominates():
    # The NaN-score point at cost 0 would dominate everything if it counted; the NaN-cost one likewise.
    mask = pareto_mask([0, NAN, 1, 2], [NAN, 1.0, 0.5, 0.6])
    assert mask.tolist() == [False, False, True, True]
    assert pareto_mask([NAN], [NAN]).tolist() == [False]


def test_pareto_mask_single_and_empty():
    single = pareto_mask([3.0], [0.1])
    assert single.dtype == bool and single.tolist() == [True]
    empty = pareto_mask([], [])
    assert empty.dtype == bool and empty.shape == (0,)
    assert front_order([], []) == []


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    cost = rng.integers(0, 8, size=60).astype(float)
    score = rng.integers(0, 8, size=60).astype(float)
    cost[[3, 17]] = NAN
    score[[5]] = NAN
    expected = []
    for i in range(60):
        if math.isnan(cost[i]) or math.isnan(score[i]):
            expected.append(False)
            continue
        dominated = any(
            cost[j] <= cost[i] and score[j] >= score[i] and (cost[j] < cost[i] or score[j] > score[i])
            for j in range(60) if not (math.isnan(cost[j]) or math.isnan(score[j]))
        )
        expected.append(not dominated)
    assert pareto_mask(cost, score).tolist() == expected


def test_pareto_mask_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        pareto_mask([1, 2], [0.5])


def test_front_order_sorted_by_cost():
    cost = [4, 1, 5, 2, 3]
    score = [0.90, 0.80, 0.90, 0.85, 0.84]
    assert front_order(cost, score) == [1, 3, 0]
    assert front_order([2, 2, 1], [0.9, 0.9, 0.1]) == [2, 0, 1]


# --- plots ----------------------------------------------------------------------------------------

PIPELINES = {"baseline": (1.00, 0.0), "int8-dynamic": (0.55, -0.007), "kd-3layer": (0.60, -0.005)}
BACKENDS = {"torch:cpu:default": 1.0, "onnxruntime:cpu:default": 0.8}
SHAPES = [(1, 128), (32, 128)]
TASKS = {"sst2": ("accuracy", 0.875), "stsb": ("pearson", 0.86)}


def make_frame() -> pd.DataFrame:
    """2 tasks x 3 pipelines x 2 backends x 2 shapes, plus ``cola`` with one row; deterministic numbers."""
    rows = []
    for task, (metric_name, base_metric) in TASKS.items():
        for p_i, (pipeline, (speed, delta)) in enumerate(PIPELINES.items()):
            for b_i, (backend, backend_speed) in enumerate(BACKENDS.items()):
                metric = base_metric + delta - 0.002 * b_i
                for batch, seq in SHAPES:
                    p50 = 20.0 * batch ** 0.9 * speed * backend_speed
                    size = int(90_868_632 * (0.25 if pipeline == "int8-dynamic" else 0.77 ** p_i)) + 50_000 * b_i
                    rows.append({
                        "run_id": "demo", "status": "ok", "task": task, "pipeline": pipeline, "backend_label": backend,
                        "batch_size": batch, "seq_len": seq, "metric_name": metric_name, "metric": metric,
                        "metric_ci95_low": metric - 0.021, "metric_ci95_high": metric + 0.019,
                        "latency_p50_ms": p50, "latency_p10_ms": p50 * 0.93, "latency_p90_ms": p50 * 1.12,
                        "size_bytes": size,
                    })
    rows[0]["latency_p10_ms"] = NAN  # an old row without p10
    rows[1]["metric_ci95_low"] = rows[1]["metric_ci95_high"] = NAN  # no CI
    rows.append({**rows[0], "task": "cola", "metric_name": "matthews_correlation", "metric": 0.41,
                 "metric_ci95_low": 0.35, "metric_ci95_high": 0.47})
    return pd.DataFrame(rows)


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    height, width = image.shape[:2]
    assert width > 600 and height > 300, (path.name, image.shape)
    assert image.std() > 0.01, f"{path.name} looks blank"


@pytest.fixture(scope="module")
def plot_dir(tmp_path_factory) -> Path:
    """Where ``written`` put the plots of ``make_frame()``; the folder does not exist beforehand."""
    return tmp_path_factory.mktemp("plots") / "out"


@pytest.fixture(scope="module")
def written(plot_dir: Path) -> dict[str, list[Path]]:
    """The plots of ``make_frame()``, written once for the module."""
    return write_plots(make_frame(), plot_dir)


def test_write_plots_all_tasks(written: dict[str, list[Path]], plot_dir: Path):
    assert set(written) == {"sst2", "stsb", "cola"}
    for task, paths in written.items():
        assert [p.name for p in paths] == [f"{task}-metric-vs-latency.png", f"{task}-metric-vs-size.png"]
        for path in paths:
            assert path.parent == plot_dir
            _assert_png(path)
    assert sorted(p.name for p in plot_dir.iterdir()) == sorted(p.name for ps in written.values() for p in ps)
    # Two shape panels side by side are wider than the single size panel.
    assert imread(written["sst2"][0]).shape[1] > imread(written["sst2"][1]).shape[1]


def test_write_plots_single_point_and_empty(tmp_path: Path):
    frame = make_frame()
    one = frame[frame["task"] == "cola"]
    assert len(one) == 1
    got = write_plots(one, tmp_path / "one")
    assert list(got) == ["cola"]
    for path in got["cola"]:
        _assert_png(path)
    assert write_plots(frame.iloc[0:0], tmp_path / "none") == {}
    assert not (tmp_path / "none").exists()


def test_write_plots_is_deterministic_and_ignores_extra_columns(written: dict[str, list[Path]], tmp_path: Path):
    frame = make_frame()
    sst2 = frame[frame["task"] == "sst2"].assign(extra=1, notes="x")
    again = write_plots(sst2, tmp_path)["sst2"]
    for a, b in zip(written["sst2"], again):
        assert np.array_equal(imread(a), imread(b)), a.name


def test_write_plots_many_shapes_wrap_and_sanitised_name(written: dict[str, list[Path]], tmp_path: Path):
    frame = make_frame()
    sst2 = frame[frame["task"] == "sst2"]
    shapes = pd.concat([sst2.assign(seq_len=s) for s in (32, 64)], ignore_index=True)  # 2 x 2 = 4 shapes
    got = write_plots(shapes.assign(task="my task/v2"), tmp_path)
    latency, _ = got["my task/v2"]
    assert latency.name == "my_task_v2-metric-vs-latency.png" and latency.parent == tmp_path
    height, width = imread(latency).shape[:2]
    one_row_height, two_panel_width = imread(written["sst2"][0]).shape[:2]
    # 4 panels wrap to 2 rows of 3 (not 1 row of 4): about twice as tall, 1.5 times as wide as 2 panels.
    assert height > 1.7 * one_row_height
    assert 1.2 * two_panel_width < width < 1.8 * two_panel_width


def test_write_plots_missing_columns(tmp_path: Path):
    frame = make_frame()
    cola = frame[frame["task"] == "cola"]
    with pytest.raises(KeyError, match="latency_p50_ms"):
        write_plots(cola.drop(columns=["latency_p50_ms"]), tmp_path / "bad")
    # Whisker bounds are optional: without them the points have no whiskers.
    got = write_plots(cola.drop(columns=["latency_p10_ms", "metric_ci95_low"]), tmp_path / "ok")
    _assert_png(got["cola"][0])
