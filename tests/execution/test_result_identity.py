"""A cell served from the result cache is the cell that asked: renamed pipelines and two pipelines that
validate to the same steps keep their own names, served without measuring again, and a second step-less
pipeline keeps its own (the bug: a served row kept the identity of the cell that had stored it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compbench.results.report import RunReport

from runs import Runner, suite_dict

DYNAMIC = [{"compressor": "quantize", "params": {"method": "dynamic"}}]


@pytest.mark.long
def test_served_rows_take_the_identity_of_the_cell_that_asked(tmp_path: Path, tiny_artifact, glue_data: Path):
    runner = Runner(tmp_path, tmp_path, tmp_path / "cache")
    first = suite_dict(tiny_artifact.path, glue_data, [{"name": "torch"}], runner={"isolation": "inline"},
                       pipelines=[{"name": "baseline"}, {"name": "int8", "steps": DYNAMIC}])
    done = runner.run("run", runner.write_suite("first", first), "--results-dir", runner.results, "--run-id", "first",
                      "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]

    second = {**first, "pipelines": [
        {"name": "baseline"},
        {"name": "int8-renamed", "steps": DYNAMIC},
        {"name": "int8-embeddings", "steps": [{"compressor": "quantize",
                                               "params": {"method": "dynamic", "embeddings": True}}]},
        {"name": "teacher-copy"},
    ]}
    done = runner.run("run", runner.write_suite("second", second), "--results-dir", runner.results,
                      "--run-id", "second", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    # the step-less copy of the teacher is timed against the teacher (an A/A pair), which the teacher's own cell
    # is not: it is measured; the other three are served
    assert "3 cells from the result cache" in done.stderr and "1 to measure" in done.stderr
    rows = runner.rows("second")
    assert sorted((r["pipeline"], r["batch_size"]) for r in rows) == sorted(
        (name, batch) for name in ("baseline", "int8-renamed", "int8-embeddings", "teacher-copy") for batch in (1, 2))
    for row in rows:
        assert row["cell_id"] == f"sst2/{row['pipeline']}/torch:cpu:default" and row["run_id"] == "second"
        assert row["measured_in_run"] == ("second" if row["pipeline"] == "teacher-copy" else "first")
    steps = {r["pipeline"]: r["steps"] for r in rows}
    assert steps["teacher-copy"] == [] and steps["int8-embeddings"][0]["params"]["embeddings"] is True
    by_pipeline = {r["pipeline"]: r["metric"] for r in runner.rows("first")}
    assert {r["pipeline"]: r["metric"] for r in rows} == {
        "baseline": by_pipeline["baseline"], "teacher-copy": by_pipeline["baseline"],
        "int8-renamed": by_pipeline["int8"], "int8-embeddings": by_pipeline["int8"]}

    # one teacher per backend and shape: every other row has its relative columns
    analysed = RunReport.from_run_dir(runner.results / "second").analysed
    assert sum(r["is_baseline"] for r in analysed) == 2
    assert all(r["baseline_metric"] is not None for r in analysed)

    # and a resume sees every cell as finished
    done = runner.run("run", "--resume", runner.results / "second", "--no-progress")
    assert done.returncode == 0 and "4 of 4 cells already done" in done.stderr, done.stderr[-2000:]
