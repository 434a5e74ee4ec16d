"""Meaningless numbers are named, not passed quietly: an evaluation set too small for its intervals gets a
warning at the top of the report and no gate; a teacher whose interval holds what a constant prediction scores
(it learned nothing) gets a warning at the top of the report and from ``trust_warnings``."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from compbench.results.analysis import MIN_EVAL_ROWS, analyse, summary_records
from compbench.results.report import RunReport, write_reports
from compbench.results.rows import ResultsFile
from compbench.results.trust import constant_score, trust_warnings, trust_warnings_for
from compbench.tasks.metrics import bootstrap_ci, get_metric

from result_rows import row

GATE = re.compile(r"\|\s+[✓✗] \|")
WITHHELD = re.compile(r"\|\s+— \|")


def scored(pipeline: str, labels: list, predictions: list, *, task: str = "sst2", metric_name: str = "accuracy",
           carry_labels: bool = True, **extra) -> dict:
    """A row scored on ``labels``: its metric and bootstrap interval computed as the measurement does."""
    preds, labs = np.asarray(predictions), np.asarray(labels)
    value = get_metric(metric_name)(preds, labs)
    interval = bootstrap_ci(metric_name, preds, labs, n_resamples=1000, seed=0)
    return row(pipeline, 0, 10.0, task=task, metric_name=metric_name, metric=value,
               metric_ci95=interval.as_list(), metrics={metric_name: value}, predictions=list(predictions),
               labels=list(labels) if carry_labels else None, eval_rows=len(labels), **extra)


def sized_run(n_rows: int, task: str = "sst2") -> list[dict]:
    """A teacher right on 95% of ``n_rows`` balanced rows, an int8 model 1 row worse (of 200 rows it keeps 99.5%
    of the teacher's accuracy: the 99% gate passes, the 99.9% one fails) and a copy with the same predictions."""
    labels = [i % 2 for i in range(n_rows)]
    n_wrong = n_rows // 20
    teacher = [1 - y if i < n_wrong else y for i, y in enumerate(labels)]
    worse = [1 - y if i <= n_wrong else y for i, y in enumerate(labels)]
    return [scored("baseline", labels, teacher, task=task), scored("int8", labels, worse, task=task, size=23_000_000),
            scored("same", labels, teacher, task=task)]


def write_run(folder, rows: list[dict], labels: dict[str, list] | None = None) -> None:
    results = ResultsFile(folder / "results.jsonl")
    for r in rows:
        results.append(r)
    for task, by_split in (labels or {}).items():
        (folder / "labels").mkdir(exist_ok=True)
        (folder / "labels" / f"{task}.json").write_text(json.dumps(by_split))


def gate_cells(report: str, task: str) -> str:
    """The accuracy table of ``task``'s section."""
    return report.split(f"## {task}\n", 1)[1].split("### Latency", 1)[0]


# ---------------------------------------------------------------- too few evaluation rows


def test_the_threshold_is_one_hundred_rows():
    assert MIN_EVAL_ROWS == 100


def test_a_40_row_evaluation_set_is_named_at_the_top_and_marks_no_gate(tmp_path):
    write_run(tmp_path, sized_run(40))
    write_reports(tmp_path)
    expected = ("sst2: the evaluation set has 40 rows (fewer than 100): its intervals mean little and no gate is "
                "marked on it")
    assert trust_warnings(tmp_path) == [expected]
    report = (tmp_path / "report.md").read_text()
    top = report.split("How to read this", 1)[0]          # before the reading guide, the machine and every table
    assert "**Read this first:**" in top and f"- {expected}" in top
    table = gate_cells(report, "sst2")
    assert not GATE.search(table) and WITHHELD.search(table)
    assert "Gates not marked (—): the evaluation set has 40 rows, fewer than 100 rows" in report
    summary = report.split("## Summary across tasks", 1)[1].split("## sst2", 1)[0]
    assert not re.search(r"\d/\d", summary) and WITHHELD.search(summary)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert frame["keeps_99"].isna().all() and frame["keeps_99_9"].isna().all()
    assert frame["gates_withheld"].all()
    # the delta and its interval are still shown: only the pass marks go
    assert frame.loc[frame.pipeline == "int8", "metric_delta"].iloc[0] == pytest.approx(-1 / 40)


def test_a_200_row_evaluation_set_gets_no_warning_and_its_gates(tmp_path):
    write_run(tmp_path, sized_run(200))
    write_reports(tmp_path)
    assert trust_warnings(tmp_path) == []
    report = (tmp_path / "report.md").read_text()
    assert "Read this first" not in report and "Gates not marked" not in report
    table = gate_cells(report, "sst2")
    assert GATE.search(table) and not WITHHELD.search(table)
    cells = {r["pipeline"]: r for r in analyse(sized_run(200))}
    assert cells["int8"]["keeps_99"] is True and cells["int8"]["keeps_99_9"] is False
    assert cells["same"]["keeps_99_9"] is True and cells["same"]["gates_withheld"] is False


def test_only_the_small_task_loses_its_gates_and_the_summary_counts_the_gated_tasks():
    rows = sized_run(40) + sized_run(200, task="qnli")
    analysed = analyse(rows)
    assert all(r["keeps_99"] is None for r in analysed if r["task"] == "sst2")
    assert all(r["keeps_99"] is not None for r in analysed if r["task"] == "qnli")
    summary = {s["pipeline"]: s for s in summary_records(analysed)}
    assert summary["same"]["keeps_99_9"] == 1 and summary["same"]["gated_tasks"] == 1
    report = RunReport(rows).markdown()
    summary = report.split("## Summary across tasks", 1)[1].split("## sst2", 1)[0]
    assert re.search(r"\|\s+1/1 \|", summary) and re.search(r"\|\s+0/1 \|", summary) and "/2" not in summary
    assert [w.split(":")[0] for w in RunReport(rows).warnings] == ["sst2"]


def test_the_evaluation_size_comes_from_the_label_file_when_rows_carry_nothing(tmp_path):
    rows = [{**r, "labels": None, "predictions": None, "eval_rows": None} for r in sized_run(40)]
    write_run(tmp_path, rows, {"sst2": {"validation": [i % 2 for i in range(40)]}})
    assert trust_warnings(tmp_path)[0].startswith("sst2: the evaluation set has 40 rows")
    assert all(r["gates_withheld"] for r in RunReport.from_run_dir(tmp_path).analysed)


# ---------------------------------------------------------------- a teacher that learned nothing


def rte_like() -> tuple[list[int], list[int]]:
    """277 rows, 146 of class 1 (majority 0.527, as RTE's validation split); a teacher right on 145 (0.523)."""
    rng = np.random.default_rng(0)
    labels = [1] * 146 + [0] * 131
    predictions = rng.permutation([1] * 200 + [0] * 77).tolist()
    correct = sum(p == y for p, y in zip(predictions, labels))
    flip = [i for i, (p, y) in enumerate(zip(predictions, labels)) if (p == y) == (correct > 145)]
    for i in flip[:abs(correct - 145)]:
        predictions[i] = 1 - predictions[i]
    return labels, predictions


def test_a_teacher_no_better_than_the_majority_class_is_named_at_the_top(tmp_path):
    labels, teacher = rte_like()
    rows = [scored("baseline", labels, teacher, task="rte", carry_labels=False),
            scored("int8", labels, teacher, task="rte", carry_labels=False, size=23_000_000)]
    assert rows[0]["metric"] == pytest.approx(145 / 277)
    write_run(tmp_path, rows, {"rte": {"validation": labels}})
    write_reports(tmp_path)
    low, high = rows[0]["metric_ci95"]
    expected = (f"rte: the teacher (baseline) scores accuracy 0.523 [{low:.3f}, {high:.3f}], which holds the "
                'constant-prediction score 0.527 (always 1, "not_entailment"): it learned nothing, and compression '
                "results on it say little")
    assert trust_warnings(tmp_path) == [expected]
    report = (tmp_path / "report.md").read_text()
    assert f"- {expected}" in report.split("How to read this", 1)[0]
    assert GATE.search(gate_cells(report, "rte"))          # 277 rows: the gates themselves are marked


def test_a_good_teacher_gets_no_warning(tmp_path):
    labels, _ = rte_like()
    good = [y if i % 10 else 1 - y for i, y in enumerate(labels)]             # 90% right
    write_run(tmp_path, [scored("baseline", labels, good, task="rte")])
    write_reports(tmp_path)
    assert trust_warnings(tmp_path) == []
    assert "Read this first" not in (tmp_path / "report.md").read_text()


def test_a_teacher_worse_than_a_constant_and_other_metrics():
    labels = [1] * 68 + [0] * 32 + [1] * 68 + [0] * 32                       # MRPC-like: 68% positive
    guessing = [i % 2 for i in range(200)]
    mrpc = scored("baseline", labels, guessing, task="mrpc", metric_name="f1")
    warning = trust_warnings_for([mrpc])[0]
    assert warning.startswith("mrpc: the teacher (baseline) scores f1 0.5") and "lies below" in warning
    assert 'the constant-prediction score 0.810 (always "1")' in warning
    cola = scored("baseline", labels, guessing, task="cola", metric_name="matthews_correlation")
    assert "0.000 (any constant prediction)" in trust_warnings_for([cola])[0]
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 5, 200)
    stsb = scored("baseline", scores.tolist(), rng.uniform(0, 5, 200).tolist(), task="stsb", metric_name="pearson")
    assert "0.000 (a constant has no correlation)" in trust_warnings_for([stsb])[0]
    learned = scored("baseline", scores.tolist(), (scores + rng.normal(0, 0.5, 200)).tolist(), task="stsb",
                     metric_name="pearson")
    assert trust_warnings_for([learned]) == []


def test_only_the_teacher_is_judged_not_the_models_compressed_from_it():
    labels, teacher = rte_like()
    good = [y if i % 10 else 1 - y for i, y in enumerate(labels)]
    rows = [scored("baseline", labels, good, task="rte"), scored("int8", labels, teacher, task="rte")]
    assert trust_warnings_for(rows) == []


# ---------------------------------------------------------------- the constant-prediction score, independently


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_constant_prediction_score_matches_scikit_learn(seed):
    from scipy import stats
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import f1_score, matthews_corrcoef

    rng = np.random.default_rng(seed)
    labels = (rng.random(301) < rng.uniform(0.2, 0.8)).astype(int)
    features = np.zeros((labels.size, 1))
    majority = DummyClassifier(strategy="most_frequent").fit(features, labels)
    assert constant_score("accuracy", labels.tolist())[0] == pytest.approx(majority.score(features, labels))
    assert constant_score("accuracy", labels.tolist())[1] == f'always "{majority.predict(features[:1])[0]}"'
    always_positive = f1_score(labels, np.ones_like(labels), zero_division=0)
    assert constant_score("f1", labels.tolist()) == (pytest.approx(always_positive), 'always "1"')
    assert always_positive == pytest.approx(2 * labels.mean() / (1 + labels.mean()))
    for constant in (0, 1):
        assert constant_score("matthews_correlation", labels.tolist())[0] == pytest.approx(
            matthews_corrcoef(labels, np.full_like(labels, constant)))
    three = rng.integers(0, 3, 301)
    assert constant_score("accuracy", three.tolist())[0] == pytest.approx(np.bincount(three).max() / three.size)
    with pytest.warns(stats.ConstantInputWarning):       # scipy: a constant has no correlation (nan); ours reads 0
        assert np.isnan(stats.pearsonr(np.full(301, 2.5), rng.uniform(0, 5, 301))[0])
    assert constant_score("pearson", None)[0] == 0.0 and constant_score("spearmanr", None)[0] == 0.0
    assert constant_score("accuracy", None) is None and constant_score("perplexity", labels.tolist()) is None


def test_cells_timed_on_a_busy_machine_are_named():
    from compbench.results.trust import busy_machine_warning

    quiet = {"cell_id": "sst2/a/torch", "status": "ok", "machine_load": {"quiet": True, "other_cores": 0.1}}
    busy = {"cell_id": "sst2/b/torch", "status": "ok", "machine_load": {"quiet": False, "other_cores": 1.34}}
    unknown = {"cell_id": "sst2/c/torch", "status": "ok", "machine_load": {"quiet": None, "other_cores": None}}
    old = {"cell_id": "sst2/d/torch", "status": "ok"}
    assert busy_machine_warning([quiet, unknown, old]) is None
    line = busy_machine_warning([quiet, busy, dict(busy, seq_len=2), unknown, old])
    assert line.startswith("1 cells were timed while other processes kept the machine busy (up to 1.3 cores)")
