"""results.jsonl durability, and the reports people decide from: numbers relative to the teacher, their uncertainty,
gates, the summary across tasks, the CLI's report and compare commands, on hand-made rows whose answers
are known."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from compbench.cli import main
from compbench.results.analysis import analyse, speedup_columns, summary_records
from compbench.results.report import RunReport, write_reports
from compbench.results.rows import ROW_KEYS, ResultsFile, empty_row, read_rows
from compbench.results.table import COLUMNS

from result_rows import LABELS, N_ROWS, latency, predictions, row


def write_run(folder, rows: list[dict]) -> None:
    results = ResultsFile(folder / "results.jsonl")
    for r in rows:
        results.append(r)


def by_cell(analysed: list[dict]) -> dict[tuple, dict]:
    return {(r["pipeline"], r["backend_label"], r["batch_size"]): r for r in analysed}


REFERENCE = "torch:cpu:default:t2"
ORT_OVER_TORCH = 1.2        # the teacher on ONNX Runtime, measured against the teacher on torch (the reference)


def measured(ratio: float, **extra) -> dict:
    """A speed-up as a row carries it, timed interleaved (its interval +-3%, so ~1.01 holds 1)."""
    return {"ratio": ratio, "ci95": [ratio * 0.97, ratio * 1.03], "pairs": 40, "reference_p50_ms": 20.0,
            "interleaved": True, "resolution": 0.02, **extra}


def versus(ratio: float | None, source: str = "timed", **extra) -> dict:
    """A row's ``speedup_vs_reference``: against the teacher on the reference backend (torch fp32)."""
    if source == "is-reference":
        return {"ratio": 1.0, "ci95": [1.0, 1.0], "pairs": 0, "interleaved": False, "resolution": 0.02,
                "reference": REFERENCE, "source": source}
    return measured(ratio, reference=REFERENCE, source=source, **extra)


@pytest.fixture
def rows() -> list[dict]:
    """The teacher, a copy with the same predictions (0.99x its p50), int8 (2.5x faster) and a tiny model (6x) on
    torch (the reference backend) and ONNX Runtime (its teacher 1.2x torch's), at batch 1 and 32: each with the
    speed-ups a run measures (against its own backend's teacher, and against the teacher on torch)."""
    out = []
    for batch, base_p50 in ((1, 20.0), (32, 400.0)):
        for backend in ("torch", "onnxruntime"):
            over_reference = ORT_OVER_TORCH if backend == "onnxruntime" else 1.0

            def against(speedup: float) -> dict:
                if backend == "torch":
                    return {"speedup": measured(speedup), "speedup_vs_reference": versus(speedup, "same-as-speedup")}
                return {"speedup": measured(speedup), "speedup_vs_reference": versus(speedup * over_reference)}
            teacher = (versus(None, "is-reference") if backend == "torch" else versus(ORT_OVER_TORCH))
            out.append(row("baseline", 40, base_p50, backend=backend, batch=batch, speedup_vs_reference=teacher))
            out.append(row("same-predictions", 40, base_p50 * 0.99, backend=backend, batch=batch,   # within noise
                           **against(1 / 0.99)))
            out.append(row("int8", 40 + 4, base_p50 / 2.5, backend=backend, batch=batch, size=23_000_000,
                           **against(2.5)))
            out.append(row("tiny", 40 + 60, base_p50 / 6, backend=backend, batch=batch, size=10_000_000,
                           **against(6.0)))
    return out


def before(rows: list[dict]) -> list[dict]:
    """The same rows as a run from before speed-ups were measured: none carries ``speedup`` or
    ``speedup_vs_reference``."""
    return [{key: value for key, value in r.items() if key not in ("speedup", "speedup_vs_reference")} for r in rows]


def test_identical_predictions_give_a_zero_width_delta_interval(rows):
    cells = by_cell(analyse(rows))
    same = cells[("same-predictions", "torch:cpu:default", 1)]
    assert (same["metric_delta"] == 0.0 and same["metric_delta_ci95_low"] == 0.0
            and same["metric_delta_ci95_high"] == 0.0)
    assert same["metric_delta_significant"] is False
    assert same["keeps_99"] and same["keeps_99_9"] and same["metric_kept"] == 1.0


def test_deltas_gates_size_and_speedup_against_the_teacher_on_the_same_backend(rows):
    cells = by_cell(analyse(rows))
    int8 = cells[("int8", "onnxruntime:cpu:default", 32)]
    assert int8["baseline_metric"] == pytest.approx(0.9)
    assert int8["metric_delta"] == pytest.approx(-0.01)                           # 4 more rows wrong of 400
    assert int8["metric_delta_ci95_low"] < -0.01 < int8["metric_delta_ci95_high"] <= 0.0
    assert int8["metric_kept"] == pytest.approx(0.89 / 0.9)
    assert int8["keeps_99"] is False and int8["keeps_99_9"] is False             # 98.9% kept
    assert int8["size_ratio"] == pytest.approx(23 / 90)
    assert int8["speedup_p50"] == pytest.approx(2.5) and int8["speedup_interleaved"] is True
    assert int8["speedup_vs_reference_p50"] == pytest.approx(2.5 * ORT_OVER_TORCH)
    assert int8["speedup_vs_reference_significant"] is True and int8["reference_backend_label"] == REFERENCE
    teacher_on_ort = cells[("baseline", "onnxruntime:cpu:default", 32)]
    assert teacher_on_ort["speedup_p50"] is None and teacher_on_ort["speedup_vs_reference_p50"] == ORT_OVER_TORCH
    assert cells[("baseline", "torch:cpu:default", 1)]["speedup_vs_reference_source"] == "is-reference"
    tiny = cells[("tiny", "torch:cpu:default", 1)]
    assert tiny["metric_delta"] == pytest.approx(-0.15) and tiny["metric_delta_significant"] is True
    assert tiny["metric_delta_ci95_high"] < 0
    same = cells[("same-predictions", "torch:cpu:default", 1)]
    assert same["speedup_p50"] == pytest.approx(1 / 0.99) and same["speedup_significant"] is False   # within noise
    # roofline: 2.9 GFLOP in 20/6 ms (tiny, batch 1) against a 100 GFLOP/s peak
    assert tiny["achieved_gflops"] == pytest.approx(2.9 / (20 / 6 / 1000))
    assert tiny["pct_of_peak"] == pytest.approx(100 * tiny["achieved_gflops"] / 100.0)


def test_gates_at_their_boundaries():
    base = row("baseline", 0, 10.0)
    keeps_exactly_99 = row("q", 4, 10.0)        # 0.99 of 1.0
    keeps_99_9 = row("r", 0, 10.0, metric=0.999)
    cells = by_cell(analyse([base, keeps_exactly_99, keeps_99_9]))
    assert cells[("q", "torch:cpu:default", 1)]["keeps_99"] is True
    assert cells[("q", "torch:cpu:default", 1)]["keeps_99_9"] is False
    assert cells[("r", "torch:cpu:default", 1)]["keeps_99_9"] is True


def test_rows_without_a_teacher_on_their_backend_have_empty_relative_columns(rows):
    lone = row("int8", 44, 5.0, backend="onnxruntime", profile="edge")
    analysed = {r["cell_id"]: r for r in analyse([*rows, lone])}
    edge = analysed["sst2/int8/onnxruntime:cpu:edge"]
    assert edge["baseline_metric"] is None and edge["speedup_p50"] is None and edge["keeps_99"] is None
    assert "No teacher row on `onnxruntime:cpu:edge`" in RunReport([*rows, lone]).markdown()


def test_a_reduced_precision_backend_compares_with_the_fp32_teacher_on_that_device():
    fp32 = row("baseline", 0, 10.0, backend="torch")
    fp16 = row("baseline", 2, 4.0, backend="torch", precision="fp16", cell_id="sst2/baseline/torch:cpu:default:fp16",
               backend_label="torch:cpu:default:fp16", fp32_backend_label="torch:cpu:default")
    half = {r["cell_id"]: r for r in analyse([fp32, fp16])}["sst2/baseline/torch:cpu:default:fp16"]
    assert half["baseline_metric"] == 1.0 and half["metric_delta"] == pytest.approx(-0.005)
    # timed apart from the teacher (hand-made rows without a measured speed-up): no ratio of the two medians
    assert half["speedup_p50"] is None and half["speedup_interleaved"] is False and half["speedup_overlap"] is False
    timed = {**fp16, "speedup": measured(2.5)}
    assert {r["cell_id"]: r for r in analyse([fp32, timed])}[fp16["cell_id"]]["speedup_p50"] == 2.5


def test_summary_across_tasks_averages_metrics_and_takes_geometric_means(rows):
    def slower_int8(r: dict) -> dict:      # int8 half as fast on cola
        if r["pipeline"] != "int8":
            return {}
        return {"latency_ms": latency(r["latency_ms"]["p50"] * 2), "speedup": measured(r["speedup"]["ratio"] / 2),
                "speedup_vs_reference": {**r["speedup_vs_reference"],
                                         "ratio": r["speedup_vs_reference"]["ratio"] / 2}}
    stsb_like = [{**r, "task": "cola", "cell_id": r["cell_id"].replace("sst2", "cola"), **slower_int8(r)}
                 for r in rows]
    summary = {(s["pipeline"], s["backend_label"]): s for s in summary_records(analyse(rows + stsb_like))}
    int8 = summary[("int8", "torch:cpu:default")]
    assert int8["tasks"] == 2 and int8["mean_metric"] == pytest.approx(0.89)
    assert int8["mean_metric_delta"] == pytest.approx(-0.01)
    assert int8["keeps_99"] == 0 and summary[("same-predictions", "torch:cpu:default")]["keeps_99_9"] == 2
    assert int8["geomean_speedup_b1_s128"] == pytest.approx(math.sqrt(2.5 * 1.25))
    assert int8["geomean_speedup_vs_reference_b1_s128"] == pytest.approx(math.sqrt(2.5 * 1.25))
    assert summary[("int8", "onnxruntime:cpu:default")]["geomean_speedup_vs_reference_b1_s128"] == pytest.approx(
        math.sqrt(3.0 * 1.5))
    assert int8["geomean_size_ratio"] == pytest.approx(23 / 90)
    assert "speed-up vs reference b1×128" in RunReport(rows + stsb_like).markdown()


def test_markdown_report_shows_intervals_flags_gates_speedups_roofline_and_the_front(rows):
    report = RunReport(rows).markdown()
    assert "## Summary across tasks (sst2)" in report and "## sst2" in report
    assert "(teacher)" in report
    assert "-0.1500 [" in report and "] ▼" in report        # a significant loss, marked
    assert "+0.0000 [+0.000, +0.000]" in report             # identical predictions, no mark
    assert "≈1.01×" in report and "2.50×" in report and "≈2.50×" not in report
    assert "1.00× (reference)" in report and "3.00× [2.91, 3.09]" in report     # int8 on ORT against torch's teacher
    assert f"against the teacher on `{REFERENCE}`" in report
    assert re.search(r"\|\s+✗ \|", report) and re.search(r"\|\s+✓ \|", report)
    assert "362.5" in report and "362%" in report           # int8 at batch 1: 2.9 GFLOP in 8 ms, of 100 GFLOP/s
    assert "tiny ★" in report and "baseline ★" in report    # fastest/smallest and most accurate are on the front
    assert "int8 ★" in report                               # int8 is on the latency front too (by its measured ratio)
    assert "cpu 2 thread(s) float32: 100.0 GFLOP/s" in report


def test_csv_has_the_documented_columns_in_order_and_one_row_per_measurement(rows):
    frame = RunReport(rows).frame()
    assert list(frame.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert len(frame) == len(rows)
    assert ("predictions" not in frame.columns and "labels" not in frame.columns
            and "latency_samples_ms" not in frame.columns)
    assert frame["seed_teacher"].eq(42).all()


def test_report_and_compare_commands(tmp_path, rows):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    write_run(run_a, rows)
    write_run(run_b, changed(rows))
    cli = CliRunner()
    made = cli.invoke(main, ["report", str(run_a), "--format", "json"])
    assert made.exit_code == 0, made.output
    payload = json.loads(made.stdout)
    assert len(payload["rows"]) == len(rows) and {s["pipeline"] for s in payload["summary"]} >= {"int8", "tiny"}
    for name in ("report.md", "results.csv", "plots/sst2-metric-vs-latency.png", "plots/sst2-metric-vs-size.png",
                 "plots/sst2-metric-vs-speedup.png"):
        assert (run_a / name).is_file(), name
    assert "](plots/sst2-metric-vs-latency.png)" in (run_a / "report.md").read_text()
    assert "](plots/sst2-metric-vs-speedup.png)" in (run_a / "report.md").read_text()
    csv_out = cli.invoke(main, ["report", str(run_a), "--format", "csv"])
    assert csv_out.exit_code == 0 and csv_out.stdout.startswith("run_id,cell_id,task,pipeline,backend_label")

    compared = cli.invoke(main, ["compare", str(run_a), str(run_b), "--format", "json"])
    assert compared.exit_code == 0, compared.output
    result = json.loads(compared.stdout)
    cells = {(c["pipeline"], c["backend_label"], c["batch_size"]): c for c in result["cells"]}
    assert result["only_in_a"] == ["sst2/tiny/onnxruntime:cpu:default 1×128",
                                   "sst2/tiny/onnxruntime:cpu:default 32×128"]
    slower = cells[("int8", "torch:cpu:default", 1)]
    assert slower["latency_ratio"] == pytest.approx(1.5) and slower["latency_change_significant"] is True
    noisy = cells[("baseline", "torch:cpu:default", 1)]
    assert noisy["latency_ratio"] == pytest.approx(1.02) and noisy["latency_change_significant"] is False
    worse = cells[("tiny", "torch:cpu:default", 1)]
    assert (worse["metric_paired"] and worse["metric_change"] == pytest.approx(-0.05)
            and worse["metric_change_significant"])
    assert cells[("int8", "onnxruntime:cpu:default", 1)]["size_changed"] is True
    assert cells[("baseline", "onnxruntime:cpu:default", 1)]["metric_change_significant"] is False
    markdown = cli.invoke(main, ["compare", str(run_a), str(run_b)])
    assert "1.50× ▼" in markdown.stdout and "1.02×" in markdown.stdout and "1.02× ▼" not in markdown.stdout
    # each run's own measured ratio against its reference: int8 on torch 2.50x -> 1.67x, intervals apart
    assert slower["speedup_vs_reference_a"] == pytest.approx(2.5) and slower["speedup_vs_reference_b"] == \
        pytest.approx(2.5 / 1.5) and slower["speedup_vs_reference_change_significant"] is True
    assert noisy["speedup_vs_reference_change_significant"] is False       # the reference itself: 1 -> 1
    assert "2.50× → 1.67× ▼" in markdown.stdout
    assert "Only in a:" in markdown.stdout
    table = cli.invoke(main, ["compare", str(run_a), str(run_b), "--format", "csv"])
    assert len(pd.read_csv(__import__("io").StringIO(table.stdout))) == len(result["cells"])


def changed(rows: list[dict]) -> list[dict]:
    """Run B: int8 on torch 1.5x slower, the baseline 2% slower (within its spread), tiny 20 rows worse,
    int8 on onnxruntime re-quantized to another size, tiny on onnxruntime not measured."""
    out = []
    for r in rows:
        r = {**r, "run_id": "r2"}
        backend = r["backend"]
        if r["pipeline"] == "int8" and backend == "torch":
            r["latency_ms"] = latency(r["latency_ms"]["p50"] * 1.5)
            r["speedup"] = measured(r["speedup"]["ratio"] / 1.5)
            r["speedup_vs_reference"] = versus(r["speedup_vs_reference"]["ratio"] / 1.5, "same-as-speedup")
        if r["pipeline"] == "baseline" and backend == "torch":
            r["latency_ms"] = latency(r["latency_ms"]["p50"] * 1.02)
        if r["pipeline"] == "tiny":
            if backend == "onnxruntime":
                continue
            r.update(predictions=predictions(120), metric=1 - 120 / N_ROWS)
        if r["pipeline"] == "int8" and backend == "onnxruntime":
            r["size_bytes"] = 24_000_000
        out.append(r)
    return out


def test_report_and_compare_refuse_a_folder_without_results(tmp_path):
    for args in (["report", str(tmp_path)], ["compare", str(tmp_path), str(tmp_path)]):
        done = CliRunner().invoke(main, args)
        assert done.exit_code == 2 and "has no results.jsonl" in done.output and "Traceback" not in done.output


def test_old_rows_without_labels_take_them_from_the_run_folder(tmp_path, rows):
    write_run(tmp_path, [{**r, "labels": None} for r in rows])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "sst2.json").write_text(json.dumps({"validation": LABELS}))
    cells = by_cell(RunReport.from_run_dir(tmp_path).analysed)
    assert cells[("tiny", "torch:cpu:default", 1)]["metric_delta_significant"] is True


def test_known_accuracy_lies_in_its_bootstrap_interval():
    from compbench.tasks.metrics import bootstrap_ci

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    preds = np.where(rng.random(1000) < 0.85, labels, 1 - labels)
    accuracy = float((preds == labels).mean())
    interval = bootstrap_ci("accuracy", preds, labels, n_resamples=1000, seed=0)
    assert interval.low < accuracy < interval.high and 0.03 < interval.high - interval.low < 0.06


def test_a_reference_pipeline_adds_paired_deltas_against_it(tmp_path, rows):
    write_run(tmp_path, rows)
    cli = CliRunner()
    done = cli.invoke(main, ["report", str(tmp_path), "--reference", "int8"])
    assert done.exit_code == 0, done.output
    assert "Δ vs int8 (95% CI)" in done.stdout
    tiny = by_cell(analyse(rows, reference="int8"))[("tiny", "torch:cpu:default", 1)]
    assert tiny["reference_metric_delta"] == pytest.approx(-0.14) and tiny["reference_metric_delta_ci95_high"] < 0
    wrong = cli.invoke(main, ["report", str(tmp_path), "--reference", "int4"])
    assert (wrong.exit_code == 2 and "--reference int4: no such pipeline" in wrong.output
            and "valid: baseline, int8" in wrong.output)


def gpu_row(pipeline: str, n_wrong: int, p50: float, precision: str = "fp32", **extra) -> dict:
    """A CUDA row as the torch backend writes it (hand-made here: this machine has no GPU)."""
    suffix = "" if precision == "fp32" else f":{precision}"
    return row(pipeline, n_wrong, p50, device="cuda", precision=precision,
               cell_id=f"sst2/{pipeline}/torch:cuda:default{suffix}",
               backend_label=f"torch:cuda:default{suffix}", fp32_backend_label="torch:cuda:default",
               h2d_copy_ms=0.031, gpu_memory={"allocated_bytes": 180_000_000, "reserved_bytes": 220_000_000},
               roofline_peak={"device": "cuda", "threads": 2, "dtype": "float16" if precision == "fp16" else "float32",
                              "size": 4096, "gflops": 400_000.0}, **extra)


def test_gpu_rows_show_the_copy_and_memory_and_reduced_precision_compares_with_fp32(rows):
    gpu = [gpu_row("baseline", 40, 2.0), gpu_row("baseline", 41, 1.2, precision="fp16", speedup=measured(2.0 / 1.2)),
           gpu_row("bnb-int8", 44, 6.0, speedup=measured(2.0 / 6.0))]
    analysed = {r["cell_id"]: r for r in analyse([*rows, *gpu])}
    half = analysed["sst2/baseline/torch:cuda:default:fp16"]
    assert half["is_baseline"] is False and half["speedup_p50"] == pytest.approx(2.0 / 1.2)
    assert half["metric_delta"] == pytest.approx(-1 / N_ROWS)
    assert analysed["sst2/bnb-int8/torch:cuda:default"]["speedup_p50"] == pytest.approx(2.0 / 6.0)   # LLM.int8 slower
    report = RunReport([*rows, *gpu]).markdown()
    assert "H2D copy ms" in report and re.search(r"\|\s+0\.031 \|", report)
    assert "GPU peak alloc MB" in report and "180" in report and "220" in report
    assert "cuda 2 thread(s) float16: 400000.0 GFLOP/s" in report
    frame = RunReport([*rows, *gpu]).frame()
    assert frame.loc[frame.device == "cuda", "gpu_peak_reserved_bytes"].eq(220_000_000).all()
    assert "H2D copy ms" not in RunReport(rows).markdown()        # CPU-only runs keep the table narrow


def lm_row(pipeline: str, gbs: float, threads: int = 2, step: int = 100_000_000) -> dict:
    """A causal LM's decoding row at batch 1: 20 decode tokens/s, a step reading ``step`` bytes, its cell's own
    measured bandwidth ``gbs``."""
    label = "torch:cpu:default" + ("" if threads == 2 else f":t{threads}")
    generation = {"batch_size": 1, "prompt_tokens": 64, "new_tokens": 32, "ttft_ms": latency(200.0),
                  "time_per_token_ms": 50.0, "tokens_per_s": 15.0, "decode_tokens_per_s": 20.0,
                  "peak_rss_bytes": 900_000_000, "kv_cache_bytes": 3_000_000,
                  "step_bytes": {"weights": step - 2_000_000, "embedding_rows": 0, "kv_cache": 2_000_000,
                                 "total": step, "kv_dtype": "fp32", "kv_bytes_per_value": 4.0, "counted": "by hand"}}
    return row(pipeline, 0, 100.0, task="lm", threads=threads, cell_id=f"lm/{pipeline}/{label}", backend_label=label,
               fp32_backend_label=label, generation=generation, memory_bandwidth={"gbs": gbs, "threads": threads})


def test_each_decoding_row_states_its_own_bandwidth_and_roof():
    """Three cells measured 10, 12 (2 threads) and 6 GB/s (1 thread): each row's roof divides its own bandwidth
    by its own bytes a step reads, and the report says each one's, not the first cell's for all."""
    rows = [lm_row("baseline", 10.0), lm_row("int4", 12.0, step=40_000_000), lm_row("baseline", 6.0, threads=1)]
    analysed = {r["cell_id"]: r for r in analyse(rows)}
    int4 = analysed["lm/int4/torch:cpu:default"]
    assert int4["bandwidth_gbs"] == 12.0 and int4["bytes_per_step"] == 40_000_000
    assert int4["roof_tokens_per_s"] == pytest.approx(12e9 / 40e6) and int4["pct_of_bandwidth_roof"] == pytest.approx(
        100 * 20 / 300)
    report = RunReport(rows).markdown()
    assert "cpu 1 thread(s): 6.0 GB/s; cpu 2 thread(s): 10.0–12.0 GB/s" in report
    lines = {line.split("|")[1].strip() + line.split("|")[2].strip(): line for line in report.splitlines()
             if line.startswith("| ") and "1×64+32" in line}
    assert re.search(r"\|\s+40\.0 \|\s+12\.0 \|\s+7% of 300 \|", lines["int4torch:cpu:default"])
    assert re.search(r"\|\s+100\.0 \|\s+10\.0 \|\s+20% of 100 \|", lines["baselinetorch:cpu:default"])
    assert re.search(r"\|\s+100\.0 \|\s+6\.0 \|\s+33% of 60 \|", lines["baselinetorch:cpu:default:t1"])
    same = RunReport([lm_row("baseline", 10.0), lm_row("int4", 10.04)]).markdown()
    assert "cpu 2 thread(s): 10.0 GB/s." in same        # cells that agree: one value


# ---------------------------------------------------------------- results.jsonl and reports from it alone

DESIGN_CONTRACT = {
    "run_id", "cell_id", "task", "pipeline", "steps", "backend", "profile", "device", "threads", "batch_size",
    "seq_len", "status", "reason", "metric_name", "metric", "metric_ci95", "metrics", "latency_ms",
    "throughput_per_s", "size_bytes", "params", "nonzero_params", "artifact",
}


def ok_row(**overrides) -> dict:
    row = empty_row(
        run_id="r1", cell_id="sst2/baseline/torch:cpu:default", task="sst2", pipeline="baseline", steps=[],
        backend="torch", profile="default", device="cpu", threads=2, batch_size=1, seq_len=128, status="ok",
        backend_label="torch:cpu:default", fp32_backend_label="torch:cpu:default", precision="fp32",
        metric_name="accuracy", metric=0.9, metric_ci95=[0.88, 0.92], metrics={"accuracy": 0.9},
        latency_ms={"p50": 20.0, "p90": 25.0, "p99": 30.0, "mean": 21.0, "std": 2.0, "min": 19.0, "n": 50,
                    "cold": 40.0},
        throughput_per_s=47.6, size_bytes=90_000_000, params=22_700_000, nonzero_params=22_700_000, artifact="/a",
        eval_rows=872, eval_split="validation", data_source="local",
        lineage=[{"base": "minilm-l6", "train_rows": 10, "steps": 5, "seconds": 3.0}],
    )
    row.update(overrides)
    return row


def test_row_keys_keep_the_design_contract():
    assert DESIGN_CONTRACT <= set(ROW_KEYS)


def test_append_rejects_rows_missing_contract_keys(tmp_path):
    with pytest.raises(ValueError, match="metric"):
        ResultsFile(tmp_path / "results.jsonl").append({"run_id": "x"})


def test_torn_last_line_is_ignored(tmp_path):
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append(ok_row())
    results.append(ok_row(batch_size=32))
    with open(results.path, "a") as handle:
        handle.write('{"run_id": "r1", "cell_')   # a kill -9 in the middle of a write
    assert [r["batch_size"] for r in read_rows(results.path)] == [1, 32]


def test_reports_rebuild_from_results_alone(tmp_path):
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append(ok_row())
    results.append(ok_row(batch_size=32, latency_ms={**ok_row()["latency_ms"], "p50": 500.0}))
    reason = "no sst2 data: looked in /data/glue/qqp"
    results.append(empty_row(run_id="r1", cell_id="qqp/baseline/torch:cpu:default", task="qqp", pipeline="baseline",
                             steps=[], backend="torch", profile="default", device="cpu", threads=2, batch_size=1,
                             backend_label="torch:cpu:default", fp32_backend_label="torch:cpu:default",
                             precision="fp32", seq_len=128, status="skipped", reason=reason))
    write_reports(tmp_path)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == 3
    assert {"latency_p50_ms", "latency_p90_ms", "metric_ci95_low", "metric_ci95_high", "metric_accuracy",
            "status"} <= set(frame.columns)
    assert frame["latency_p50_ms"].tolist()[:2] == [20.0, 500.0]
    report = (tmp_path / "report.md").read_text()
    assert "## sst2" in report and "## qqp" in report
    assert "0.9000 [0.880, 0.920]" in report
    assert re.search(r"\|\s+500\.00 \|", report)
    assert f"**skipped**: {reason}" in report


def test_tidy_frame_flattens_nested_values():
    frame = RunReport([ok_row(steps=[{"compressor": "quantize", "params": {"method": "dynamic"}}])]).frame()
    assert json.loads(frame.loc[0, "steps"]) == [{"compressor": "quantize", "params": {"method": "dynamic"}}]
    assert "latency_ms" not in frame.columns and "predictions" not in frame.columns


def test_markdown_report_without_rows_is_still_valid():
    assert RunReport([]).markdown().startswith("# compbench report")


def test_sparse_rows_show_non_zero_parameters_and_say_they_run_dense():
    rows = [ok_row(), ok_row(pipeline="magnitude-80", artifact_format="hf-sparse", nonzero_params=14_200_000,
                             size_bytes=58_000_000)]
    report = RunReport(rows).markdown()
    assert re.search(r"\|\s+14\.20 \|", report)                       # the non-zero column
    assert "`hf-sparse` (magnitude-80)" in report and "not faster" in report
    assert "hf-sparse" not in RunReport([ok_row()]).markdown()


def test_rows_written_before_rows_carried_their_backend_label_still_load(tmp_path):
    """Older results files: backend_label, precision and the fp32 label come from the cell id when read."""
    legacy = [{k: v for k, v in r.items() if k not in ("backend_label", "fp32_backend_label")}
              for r in (row("baseline", 0, 10.0), row("baseline", 2, 4.0, precision="fp16",
                                                        cell_id="sst2/baseline/torch:cpu:default:fp16"))]
    write_run(tmp_path, legacy)
    read = read_rows(tmp_path / "results.jsonl")
    assert [(r["backend_label"], r["fp32_backend_label"]) for r in read] == [
        ("torch:cpu:default", "torch:cpu:default"), ("torch:cpu:default:fp16", "torch:cpu:default")]
    half = {r["cell_id"]: r for r in RunReport.from_run_dir(tmp_path).analysed}["sst2/baseline/torch:cpu:default:fp16"]
    assert half["baseline_metric"] == 1.0 and half["is_baseline"] is False


# ---------------------------------------------------------------- interleaved speed-ups


def test_an_interleaved_speedup_is_marked_only_when_its_interval_excludes_one():
    """Rows timed against the teacher in one job carry the ratio and its paired interval: the report marks
    ≈ (no difference) when the interval holds 1, however far the p50s of the two cells are apart."""
    teacher = row("baseline", 40, 20.0)
    same = row("same-model", 40, 20.0 / 1.3, speedup={"ratio": 1.01, "ci95": [0.98, 1.04], "pairs": 40,
                                                       "reference_p50_ms": 20.2, "interleaved": True})
    faster = row("int8", 44, 8.0, speedup={"ratio": 2.5, "ci95": [2.4, 2.6], "pairs": 40,
                                           "reference_p50_ms": 20.0, "interleaved": True})
    analysed = {r["pipeline"]: r for r in analyse([teacher, same, faster])}
    a_a = {"ratio": 0.9883, "ci95": [0.9815, 0.9982], "pairs": 10, "reference_p50_ms": 20.0, "interleaved": True,
           "resolution": 0.02}      # measured: the quick suite's A/A pair on ONNX Runtime, batch 8
    assert not speedup_columns({"status": "ok", "speedup": a_a}, None)["speedup_significant"]
    small = {**a_a, "ratio": 1.05, "ci95": [1.03, 1.07]}
    assert speedup_columns({"status": "ok", "speedup": small}, None)["speedup_significant"]
    assert analysed["same-model"]["speedup_p50"] == 1.01 and analysed["same-model"]["speedup_significant"] is False
    assert analysed["int8"]["speedup_significant"] is True and analysed["int8"]["speedup_ci95_low"] == 2.4
    assert analysed["int8"]["speedup_interleaved"] is True and analysed["int8"]["speedup_overlap"] is None
    report = RunReport([teacher, same, faster]).markdown()
    assert "≈1.01× [0.98, 1.04]" in report and "2.50× [2.40, 2.60]" in report
    frame = RunReport([teacher, same, faster]).frame()
    assert {"speedup_ci95_low", "speedup_ci95_high", "speedup_significant"} <= set(frame.columns)


def test_compare_flags_latency_by_the_interval_of_the_median_ratio():
    from compbench.results.compare import latency_change

    rng = np.random.default_rng(1)
    base = 20.0 * rng.normal(1, 0.03, 60)
    a = row("int8", 40, 20.0, latency_samples_ms=base.tolist())
    slower = row("int8", 40, 30.0, latency_samples_ms=(1.5 * 20.0 * rng.normal(1, 0.03, 60)).tolist())
    noise = row("int8", 40, 20.0, latency_samples_ms=(20.0 * rng.normal(1, 0.03, 60)).tolist())   # A/A: new draws
    flagged = latency_change(a, slower)
    assert flagged["latency_change_significant"] and flagged["latency_ratio_ci95_low"] > 1.4
    assert not latency_change(a, noise)["latency_change_significant"]


def test_compare_reads_drift_between_runs_through_each_runs_interleaved_speedup():
    """Run B on a machine 40% slower throughout (drift): every call's interval says "slower", but the models' own
    interleaved speed-ups against the teacher did not move, so nothing is flagged and the teacher's change is shown
    as the drift; a model whose own speed-up fell (2.0x -> 1.6x) is flagged slower, even though drift the other way
    (B 20% faster throughout) makes its absolute latency look better."""
    from compbench.results.compare import RunComparison, latency_change

    rng = np.random.default_rng(2)

    def timed(pipeline, p50, speedup=None):
        calls = (p50 * rng.normal(1, 0.02, 60)).tolist()
        extra = {"speedup": {"ratio": speedup, "ci95": [speedup * 0.98, speedup * 1.02], "pairs": 60,
                             "interleaved": True, "resolution": 0.02}} if speedup else {}
        return row(pipeline, 40, p50, latency_samples_ms=calls, **extra)

    teacher_a, teacher_b = timed("baseline", 20.0), timed("baseline", 28.0)
    model_a, model_b = timed("int8", 10.0, 2.0), timed("int8", 14.0, 2.0)
    drifted = latency_change(model_a, model_b)
    assert drifted["latency_ratio_ci95_low"] > 1.3                     # the calls alone would call it slower
    assert drifted["latency_flag_basis"] == "own-speedup" and drifted["latency_change_significant"] is False
    teacher = latency_change(teacher_a, teacher_b)
    assert teacher["latency_flag_basis"] == "drift" and teacher["latency_change_significant"] is None
    relatively_slower = latency_change(model_a, timed("int8", 10.0, 1.6))       # B: 12.5 ms x 0.8 drift
    assert relatively_slower["latency_change_significant"] is True
    markdown = RunComparison("a", [teacher_a, model_a], "b", [teacher_b, timed("int8", 10.0, 1.6)]).markdown()
    assert "(drift)" in markdown
    assert any("int8" in line and "▼" in line for line in markdown.splitlines())


# ---------------------------------------------------------------- speed-ups against the reference backend


def test_rows_of_a_run_from_before_show_a_dash_never_a_ratio_of_medians(tmp_path, rows):
    """Rows without measured speed-ups (an older run) still report: "—" where the speed-ups go, in the latency
    table and the summary; no figure divides two cells' medians (int8's 2.5x, its 3x against torch's teacher)."""
    old = before(rows)
    cells = by_cell(analyse(old))
    int8 = cells[("int8", "onnxruntime:cpu:default", 1)]
    assert int8["speedup_p50"] is None and int8["speedup_vs_reference_p50"] is None
    assert int8["speedup_interleaved"] is False and int8["speedup_overlap"] is False     # only this is said
    write_run(tmp_path, old)
    done = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert done.exit_code == 0, done.output
    report = done.stdout
    assert "2.50×" not in report and "3.00×" not in report and "6.00×" not in report
    latency_lines = [line for line in report.splitlines() if line.startswith("| int8") and "×128" in line]
    assert latency_lines and all(line.count("—") >= 2 for line in latency_lines)      # both speed-up columns
    summary = next(line for line in report.splitlines() if line.startswith("| int8"))
    assert summary.rstrip(" |").endswith("—")
    assert "Not timed against the reference" in report and "measured before compbench timed rows" in report
    assert not (tmp_path / "plots" / "sst2-metric-vs-speedup.png").exists()
    frame = pd.read_csv(tmp_path / "results.csv")
    assert frame["speedup_vs_reference_p50"].isna().all() and frame["speedup_p50"].isna().all()


def test_the_headline_speedup_is_the_measured_ratio_against_the_reference(rows):
    """The latency table's headline column and the front are the ratio measured against the teacher on the reference
    backend (here deliberately unlike the ratio of the medians: ORT's teacher measured 1.2x, its p50 the same as
    torch's); a reference that could not run leaves "—" and its reason."""
    report = RunReport(rows).markdown()
    header = next(line for line in report.splitlines() if "p50 ms" in line)
    assert header.index("speed-up vs reference") < header.index("vs teacher, same backend")
    ort_teacher = next(line for line in report.splitlines()
                       if line.startswith("| baseline") and "onnxruntime" in line and "1×128" in line)
    assert "1.20× [1.16, 1.24]" in ort_teacher and "(teacher)" in ort_teacher
    why = "the reference backend torch:cuda:default:t2 cannot run here: no CUDA device is visible to torch"
    gpu = row("int8", 44, 1.0, device="cuda", cell_id="sst2/int8/torch:cuda:default",
              backend_label="torch:cuda:default", fp32_backend_label="torch:cuda:default", speedup=measured(2.0),
              speedup_vs_reference={"ratio": None, "ci95": None, "reference": "torch:cuda:default:t2", "source": None,
                                    "reason": why})
    report = RunReport([*rows, row("baseline", 40, 2.0, device="cuda", cell_id="sst2/baseline/torch:cuda:default",
                                   backend_label="torch:cuda:default", fp32_backend_label="torch:cuda:default"),
                        gpu]).markdown()
    assert f"Not timed against the reference (`sst2/int8/torch:cuda:default`): {why}." in report
    line = next(line for line in report.splitlines() if line.startswith("| int8") and "cuda" in line and "×128" in line)
    assert "| — |" in re.sub(r" +", " ", line) and "2.00× [1.94, 2.06]" in line


def perplexity_rows(shift: float) -> list[dict]:
    """The teacher and a model ``shift`` nats a token worse (or better, below 0), on 150 documents of 40 tokens."""
    counts = [40] * 150
    sums = [40 * (2.5 + 0.4 * math.sin(i)) for i in range(150)]
    worse = [s + 40 * shift for s in sums]

    def lm(pipeline: str, nll: list[float]) -> dict:
        value = math.exp(sum(nll) / sum(counts))
        return row(pipeline, 0, 10.0, metric_name="perplexity", metric=value, metrics={"perplexity": value},
                   predictions=nll, labels=counts)
    return [lm("baseline", sums), lm("int4", worse)]


@pytest.mark.parametrize("shift, mark", [(0.05, "▼"), (-0.05, "▲")])
def test_a_rise_in_perplexity_is_marked_worse_and_a_fall_better(tmp_path, shift, mark):
    from compbench.results.compare import RunComparison
    from compbench.results.report import delta_text

    baseline, model = perplexity_rows(shift)
    analysed = {r["pipeline"]: r for r in analyse([baseline, model])}["int4"]
    assert (analysed["metric_delta"] > 0) is (shift > 0) and analysed["metric_delta_significant"]
    assert delta_text(analysed).endswith(mark)                      # before: ▲ for any rise, perplexity too
    assert f"] {mark}" in RunReport([baseline, model]).markdown()
    # compare: run B's model against run A's teacher, the same mark
    compared = RunComparison("a", [baseline], "b", [{**model, "pipeline": "baseline"}])
    assert compared.records[0]["metric_change_significant"]
    assert RunComparison._table_row(compared.records[0])["change (95% CI)"].endswith(mark)


def test_the_report_names_the_label_binary_f1_counts_as_positive():
    """MRPC's headline F1 counts class 1, "equivalent", as positive (a row of a run before says nothing: GLUE's own
    names serve); a task of the user's names its label in the row (positive_label)."""
    mrpc = [row(name, wrong, 10.0, task="mrpc", metric_name="f1", metrics={"f1": 0.8, "accuracy": 0.7})
            for name, wrong in (("baseline", 40), ("int8", 44))]
    report = RunReport(mrpc).markdown()
    assert 'f1, positive 1 ("equivalent") (95% CI)' in report
    assert '`f1` is the binary F1 of class 1 ("equivalent"), the positive label.' in report
    spam = [row(name, wrong, 10.0, task="spam", metrics={"accuracy": 0.9, "f1": 0.8},
                positive_label={"id": 1, "name": "spam"}) for name, wrong in (("baseline", 40), ("int8", 44))]
    report = RunReport(spam).markdown()
    assert 'class 1 ("spam"), the positive label' in report and "accuracy (95% CI)" in report
    assert "positive label" not in RunReport([row("baseline", 40, 10.0)]).markdown()     # no f1: nothing to name
