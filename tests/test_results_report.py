"""results.jsonl durability and the reports built from it alone."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from compbench.report import RunReport, write_reports
from compbench.results import ROW_KEYS, ResultsFile, empty_row, read_rows

DESIGN_CONTRACT = {
    "run_id", "cell_id", "task", "pipeline", "steps", "backend", "profile", "device", "threads", "batch_size",
    "seq_len", "status", "reason", "metric_name", "metric", "metric_ci95", "metrics", "latency_ms",
    "throughput_per_s", "size_bytes", "params", "nonzero_params", "artifact",
}


def ok_row(**overrides) -> dict:
    row = empty_row(
        run_id="r1", cell_id="sst2/baseline/torch:cpu:default", task="sst2", pipeline="baseline", steps=[],
        backend="torch", profile="default", device="cpu", threads=2, batch_size=1, seq_len=128, status="ok",
        metric_name="accuracy", metric=0.9, metric_ci95=[0.88, 0.92], metrics={"accuracy": 0.9},
        latency_ms={"p50": 20.0, "p90": 25.0, "p99": 30.0, "mean": 21.0, "std": 2.0, "min": 19.0, "n": 50, "cold": 40.0},
        throughput_per_s=47.6, size_bytes=90_000_000, params=22_700_000, nonzero_params=22_700_000, artifact="/a",
        eval_rows=872, eval_split="validation", data_source="local", lineage=[{"base": "minilm-l6", "train_rows": 10, "steps": 5, "seconds": 3.0}],
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
                             seq_len=128, status="skipped", reason=reason))
    write_reports(tmp_path)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == 3
    assert {"latency_p50_ms", "latency_p90_ms", "metric_ci95_low", "metric_ci95_high", "metric_accuracy", "status"} <= set(frame.columns)
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
    rows = [ok_row(), ok_row(pipeline="magnitude-80", artifact_format="hf-sparse", nonzero_params=14_200_000, size_bytes=58_000_000)]
    report = RunReport(rows).markdown()
    assert re.search(r"\|\s+14\.20 \|", report)                       # the non-zero column
    assert "`hf-sparse` (magnitude-80)" in report and "not faster" in report
    assert "hf-sparse" not in RunReport([ok_row()]).markdown()
