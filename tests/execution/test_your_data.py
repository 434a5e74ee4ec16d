"""The main road of issue 16: the user's own data files and their own fine-tuned model, through the command line.

Data files are written at test time from the shared GLUE rows (never copied into the repository), with the
user's own column names and string labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runs import Runner

MEASURE = {"batch_sizes": [1], "seq_lens": [32], "warmup_iters": 1, "min_iters": 2, "min_seconds": 0.05}
TINY_TEACHER = {"epochs": 1, "max_steps": 4, "batch_size": 16, "learning_rate": 1e-3, "max_seq_len": 32, "seed": 1}


def sst2_reviews(glue_data: Path, folder: Path, train_rows: int, eval_rows: int) -> dict[str, str]:
    """SST-2 rows as the user's CSVs: columns ``review`` and ``sentiment`` (negative / positive)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = np.array(["negative", "positive"])
    paths = {}
    for split, rows, file in (("train", train_rows, "train.csv"), ("validation", eval_rows, "dev.csv")):
        frame = pd.read_parquet(glue_data / "glue" / "sst2" / f"{split}.parquet").sample(n=rows, random_state=0)
        pd.DataFrame({"id": range(len(frame)), "review": frame["sentence"].to_numpy(),
                      "sentiment": names[frame["label"].to_numpy()]}).to_csv(folder / file, index=False)
        paths[split] = str(folder / file)
    return paths


def three_kinds(glue_data: Path, folder: Path) -> list[dict]:
    """A 3-class task (CSV), a multi-label task (JSON Lines, label lists) and a regression task (parquet),
    all from real sentences; the labels are derived from the sentences, so a model can learn them."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    sst2 = pd.read_parquet(glue_data / "glue" / "sst2" / "train.parquet").head(240)
    words = sst2["sentence"].str.split().str.len()
    size = np.where(words < 8, "short", np.where(words < 20, "medium", "long"))
    pd.DataFrame({"text": sst2["sentence"], "length": size}).iloc[:160].to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"text": sst2["sentence"], "length": size}).iloc[160:].to_csv(folder / "validation.csv", index=False)
    tasks.append({"name": "length", "data": str(folder / "train.csv").replace("train.csv", ""), "text": "text",
                  "label": "length", "labels": ["short", "medium", "long"]})
    with open(folder / "tags.jsonl", "w") as handle:
        for sentence, label in zip(sst2["sentence"], sst2["label"]):
            tags = (["positive"] if label else []) + (["film"] if "film" in sentence or "movie" in sentence else [])
            handle.write(json.dumps({"sentence": sentence, "tags": tags}) + "\n")
    tasks.append({"name": "tags", "data": str(folder / "tags.jsonl"), "validation_fraction": 0.3, "text": "sentence",
                  "label": "tags", "labels": ["positive", "film"], "problem": "multi_label"})
    stsb = pd.read_parquet(glue_data / "glue" / "stsb" / "train.parquet").head(200)
    stsb.rename(columns={"sentence1": "a", "sentence2": "b", "label": "similarity"}).to_parquet(folder / "sim.parquet")
    tasks.append({"name": "similarity", "data": str(folder / "sim.parquet"), "validation_fraction": 0.3, "text": "a",
                  "text_pair": "b", "label": "similarity"})
    return tasks


@pytest.mark.long
def test_multi_class_multi_label_and_regression_tasks_from_files_run_end_to_end(tmp_path, fault_plugin, tiny_artifact,
                                                                              glue_data):
    runner = Runner(tmp_path, fault_plugin, tmp_path / "cache")
    suite = runner.write_suite("kinds", {
        "name": "kinds", "model": str(tiny_artifact.path), "tasks": three_kinds(glue_data, tmp_path / "data"),
        "teacher": TINY_TEACHER, "measure": MEASURE, "runner": {"isolation": "inline"},
        "backends": [{"name": "torch"}, {"name": "onnxruntime"}],
        "pipelines": [{"name": "baseline"},
                      {"name": "int8", "backends": ["torch"], "steps": [{"compressor": "quantize",
                                                                         "params": {"method": "dynamic"}}]},
                      {"name": "kd", "backends": ["torch"], "steps": [{"compressor": "distill", "params": {
                          "student": {"layers": [0]}, "train": {"epochs": 1, "max_steps": 3, "batch_size": 16}}}]}]})
    done = runner.run("run", suite, "--results-dir", runner.results, "--run-id", "kinds", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = runner.rows("kinds")
    assert {(r["task"], r["status"]) for r in rows} == {(t, "ok") for t in ("length", "tags", "similarity")}
    assert len(rows) == 3 * 4
    by_task = {r["task"]: r for r in rows if r["pipeline"] == "baseline" and r["backend"] == "torch"}
    assert by_task["length"]["metric_name"] == "accuracy" and set(by_task["length"]["metrics"]) >= {"macro_f1"}
    assert by_task["tags"]["metric_name"] == "micro_f1" and len(by_task["tags"]["labels"][0]) == 2
    assert by_task["similarity"]["metric_name"] == "pearson"
    assert by_task["tags"]["eval_rows"] == 72 and by_task["similarity"]["eval_rows"] == 60    # 30% of 240 / 200
    report = (runner.results / "kinds" / "report.md").read_text()
    assert all(task in report for task in ("length", "tags", "similarity"))


@pytest.mark.slow
@pytest.mark.long
def test_your_fine_tuned_model_on_your_csv(tmp_path, fault_plugin, glue_data):
    """MiniLM fine-tuned by compbench on a CSV with the user's columns and string labels, then given back as a
    finished model (teacher.finetune: false): no training, and its baseline metric is the one measured when
    compbench trained it; every compressor and both backends run on it."""
    runner = Runner(tmp_path, fault_plugin, tmp_path / "cache")
    data = sst2_reviews(glue_data, tmp_path / "data", train_rows=800, eval_rows=200)
    task = {"name": "reviews", "data": data, "text": "review", "label": "sentiment", "labels": ["negative", "positive"]}
    teacher = {"epochs": 1, "max_steps": 60, "batch_size": 16, "learning_rate": 1e-4, "max_seq_len": 64, "seed": 42}
    trained = runner.write_suite("train", {"name": "train", "model": "minilm-l6", "tasks": [task], "teacher": teacher,
                                           "measure": MEASURE, "runner": {"isolation": "inline"}})
    done = runner.run("run", trained, "--results-dir", runner.results, "--run-id", "trained", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    [measured] = runner.rows("trained")
    assert measured["metric"] > 0.7 and measured["metric_name"] == "accuracy"
    model_folder = Path(measured["artifact"])
    assert json.loads((model_folder / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}

    given = {"name": "given", "model": str(model_folder), "tasks": [task],
             "teacher": {"finetune": False, "max_seq_len": 64}, "measure": MEASURE, "runner": {"isolation": "inline"},
             "backends": [{"name": "torch"}, {"name": "onnxruntime"}],
             "pipelines": [{"name": "baseline"},
                           {"name": "int8", "backends": ["torch"],
                            "steps": [{"compressor": "quantize", "params": {"method": "dynamic"}}]},
                           {"name": "ort-int8", "backends": ["onnxruntime"],
                            "steps": [{"compressor": "quantize", "params": {"method": "ort-dynamic"}}]},
                           {"name": "pruned", "steps": [{"compressor": "prune",
                                                         "params": {"method": "magnitude", "amount": 0.3}}]},
                           {"name": "svd", "steps": [{"compressor": "svd", "params": {"ratio": 0.5}}]},
                           {"name": "kd", "backends": ["torch"], "steps": [{"compressor": "distill", "params": {
                               "student": {"layers": [0, 3, 5]}, "train": {"epochs": 1, "max_steps": 10}}}]}]}
    done = runner.run("run", runner.write_suite("given", given), "--results-dir", runner.results, "--run-id", "given",
                      "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fine-tuning" not in done.stderr and "as given (teacher.finetune: false)" in done.stderr
    rows = runner.rows("given")
    assert {r["status"] for r in rows} == {"ok"}, [(r["cell_id"], r["reason"]) for r in rows if r["status"] != "ok"]
    assert {r["pipeline"] for r in rows} == {"baseline", "int8", "ort-int8", "pruned", "svd", "kd"}
    baseline = next(r for r in rows if r["pipeline"] == "baseline" and r["backend"] == "torch")
    assert baseline["metric"] == measured["metric"] and baseline["predictions"] == measured["predictions"]
    assert "reviews" in (runner.results / "given" / "report.md").read_text()

    # a head whose labels do not match the data, a missing column: one line each, exit 2, no folder made
    for wrong, says in (({**task, "labels": ["positive", "negative"]}, "labels lists positive as output 0, where "
                         "the model has negative (positive is its output 1)"),
                        ({**task, "text": "body"}, "column 'body'")):
        suite = runner.write_suite("wrong", {**given, "tasks": [wrong]})
        bad = runner.run("run", suite, "--results-dir", runner.results, "--run-id", "wrong", "--no-progress")
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-2000:]
        assert len(bad.stderr.strip().splitlines()) == 1 and not (runner.results / "wrong").exists()
