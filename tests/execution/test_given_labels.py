"""Your labels on your given model (``teacher: {finetune: false}``, issue 25): labels the user lists are the model's
output order, trusted, and the report says which model label each was read as; a ``labels:`` mapping says it label by
label, in any order; only what is truly ambiguous is refused, and every refusal's advice, followed, gives a suite
that runs. Data: real SST-2 sentences in a CSV written here, labelled thumbs-down / thumbs-up; models: a tiny random
BERT saved with named outputs (plumbing) and the real MiniLM with a 2-label head (end to end)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from compbench.common.errors import UsageError
from compbench.common.progress import Reporter
from compbench.config.loading import load_suite
from compbench.config.settings import RunSettings
from compbench.execution.jobs import RunContext, check_tasks

from runs import Runner

THUMBS = np.array(["thumbs-down", "thumbs-up"])
TEACHER = {"finetune": False, "max_seq_len": 32, "epochs": 1, "max_steps": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def reviews(glue_data: Path, tmp_path_factory) -> Path:
    """SST-2 rows as the user's CSVs (train.csv, dev.csv): ``review``, ``sentiment`` (thumbs-down / thumbs-up)."""
    folder = tmp_path_factory.mktemp("reviews")
    for split, rows, file in (("train", 40, "train.csv"), ("validation", 24, "dev.csv")):
        frame = pd.read_parquet(glue_data / "glue" / "sst2" / f"{split}.parquet").sample(n=rows, random_state=0)
        pd.DataFrame({"review": frame["sentence"].to_numpy(), "sentiment": THUMBS[frame["label"].to_numpy()]}
                     ).to_csv(folder / file, index=False)
    return folder


def saved_classifier(folder: Path, source: str | None, labels: list[str], minilm_path: Path) -> Path:
    """A sequence classifier whose outputs are named ``labels`` (the real MiniLM with a new head where ``source``,
    else a tiny random BERT), saved with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    names = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    torch.manual_seed(0)
    if source:
        model = BertForSequenceClassification.from_pretrained(source, num_labels=len(labels), **names)
    else:
        model = BertForSequenceClassification(BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            num_labels=len(labels), **names))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory, minilm_path) -> Path:
    return saved_classifier(tmp_path_factory.mktemp("negative-positive"), None, ["negative", "positive"], minilm_path)


@pytest.fixture(scope="module")
def three_outputs(tmp_path_factory, minilm_path) -> Path:
    return saved_classifier(tmp_path_factory.mktemp("three"), None, ["negative", "neutral", "positive"], minilm_path)


def suite_of(model: Path, data: Path, labels=None, teacher: dict | None = None) -> dict:
    task = {"name": "reviews", "data": {"train": str(data / "train.csv"), "validation": str(data / "dev.csv")},
            "text": "review", "label": "sentiment"}
    return {"name": "labels", "model": str(model), "tasks": [task if labels is None else {**task, "labels": labels}],
            "teacher": {**TEACHER, **(teacher or {})}, "backends": [{"name": "torch"}]}


def prepared(tmp_path: Path, suite: dict):
    """What a run does before its first build: the suite loaded, its tasks checked against the given model, the
    task's rows read and its teacher made. Returns (task data, teacher)."""
    run = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    run.mkdir()
    path = run / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    check_tasks(load_suite(path), None, str(tmp_path / "cache"))
    settings = RunSettings(str(path), str(run), str(run), run.name, str(tmp_path / "cache"))
    context = RunContext(settings, Reporter(enabled=False))
    return context.task_data("reviews"), context.teacher("reviews")


def advice(message: str) -> list[dict]:
    """Each fix a refusal suggests, as changes to the suite: every ``labels: ...`` it writes (alternatives), with
    ``teacher: {finetune: true}`` where it says to fine-tune."""
    fine_tune = {"finetune": True} if "teacher: {finetune: true}" in message else {}
    found = [yaml.safe_load(text) for text in re.findall(r"labels: (\[[^\]]*\]|\{[^}]*\})", message)]
    return [{"labels": labels, "teacher": fine_tune} for labels in found] or [{"labels": None, "teacher": fine_tune}]


def refused_then_followed(tmp_path: Path, model: Path, data: Path, labels, says: str, labels_kept: bool = False):
    """The suite with ``labels`` is refused in one line saying ``says``; each fix the line suggests then runs."""
    with pytest.raises(UsageError) as refused:
        prepared(tmp_path, suite_of(model, data, labels))
    message = str(refused.value)
    assert says in message and "\n" not in message, message
    fixes = advice(message)
    for fix in fixes:
        data_of, teacher = prepared(tmp_path, suite_of(model, data, labels if labels_kept else fix["labels"],
                                                         fix["teacher"]))
        assert teacher.num_labels == data_of.task.num_labels
    return message, fixes


def encoded_ids(data, folder: Path) -> dict[str, int]:
    """The id each label of the CSV was given (the evaluation rows read back, matched by their text)."""
    dev = pd.read_csv(folder / "dev.csv")
    named = dict(zip(dev["review"], dev["sentiment"]))
    rows = data.eval["validation"]
    return {named[review]: int(label) for review, label in zip(rows["review"], rows["label"])}


def test_labels_you_list_are_the_output_order_and_the_reading_is_recorded(tmp_path, two_outputs, reviews):
    """The case issue 25 found: the model says negative / positive, the data thumbs-down / thumbs-up."""
    data, teacher = prepared(tmp_path, suite_of(two_outputs, reviews, ["thumbs-down", "thumbs-up"]))
    assert encoded_ids(data, reviews) == {"thumbs-down": 0, "thumbs-up": 1}
    assert teacher.lineage[0]["labels_read_as"] == {"thumbs-down": "negative", "thumbs-up": "positive"}
    data, teacher = prepared(tmp_path, suite_of(two_outputs, reviews, ["thumbs-up", "thumbs-down"]))    # trusted
    assert encoded_ids(data, reviews) == {"thumbs-up": 0, "thumbs-down": 1}
    assert teacher.lineage[0]["labels_read_as"] == {"thumbs-up": "negative", "thumbs-down": "positive"}


@pytest.mark.parametrize("mapping", [{"thumbs-down": "negative", "thumbs-up": "positive"},
                                     {"thumbs-up": "POSITIVE", "thumbs-down": "negative"}])    # any order, any case
def test_a_mapping_reads_each_label_as_the_model_label_it_names(mapping, tmp_path, two_outputs, reviews):
    data, teacher = prepared(tmp_path, suite_of(two_outputs, reviews, mapping))
    head = ["negative", "positive"]        # the model's output order: the ids follow it
    assert encoded_ids(data, reviews) == {label: head.index(meant.lower()) for label, meant in mapping.items()}
    assert teacher.lineage[0]["labels_read_as"] == {"thumbs-down": "negative", "thumbs-up": "positive"}


def test_labels_inferred_from_the_data_are_ambiguous_and_both_fixes_run(tmp_path, two_outputs, reviews):
    message, fixes = refused_then_followed(tmp_path, two_outputs, reviews, None,
                                           "which of yours is which output the data cannot say")
    assert [fix["labels"] for fix in fixes] == [{"thumbs-down": "negative", "thumbs-up": "positive"},
                                                ["thumbs-down", "thumbs-up"]]


def test_the_models_own_labels_are_taken_in_its_order(tmp_path, reviews, minilm_path):
    """Data labelled with the model's own names needs no labels:, whatever the model's order."""
    swapped = saved_classifier(tmp_path / "swapped", None, ["thumbs-up", "thumbs-down"], minilm_path)
    data, teacher = prepared(tmp_path, suite_of(swapped, reviews))
    assert encoded_ids(data, reviews) == {"thumbs-up": 0, "thumbs-down": 1}
    assert "labels_read_as" not in teacher.lineage[0]


def test_a_listed_label_the_model_puts_elsewhere_is_refused_and_both_fixes_run(tmp_path, reviews, minilm_path):
    """Your names are the model's, in another order: the list contradicts the model; the old advice
    (``labels: [negative, positive]`` for thumbs labels) is never given."""
    own = saved_classifier(tmp_path / "own", None, ["thumbs-down", "thumbs-up"], minilm_path)
    message, fixes = refused_then_followed(tmp_path, own, reviews, ["thumbs-up", "thumbs-down"],
                                           "labels lists thumbs-up as output 0, where the model has "
                                           "thumbs-down")
    assert [fix["labels"] for fix in fixes] == [["thumbs-down", "thumbs-up"],
                                                {"thumbs-up": "thumbs-up", "thumbs-down": "thumbs-down"}]


@pytest.mark.parametrize("mapping, says", [
    ({"thumbs-down": "negative", "thumbs-up": "pos"}, "labels maps thumbs-up to 'pos', which is not one of the "
                                                      "model's labels (negative, positive)"),
    ({"thumbs-down": "negative", "thumbs-up": "positive", "meh": "neutral"}, "maps 3 labels, but the model has 2"),
    ({"thumbs-down": "negative", "thumbs-up": "negative"}, "maps thumbs-down and thumbs-up to the same model label"),
])
def test_a_mapping_the_model_cannot_take_is_refused_and_the_fix_runs(mapping, says, tmp_path, two_outputs, reviews):
    message, fixes = refused_then_followed(tmp_path, two_outputs, reviews, mapping, says)
    if "pos'" in says:
        assert fixes == [{"labels": {"thumbs-down": "negative", "thumbs-up": "positive"}, "teacher": {}}]


def test_a_model_with_more_outputs_takes_a_label_for_each(tmp_path, three_outputs, reviews):
    for labels in (None, ["thumbs-down", "thumbs-up"], {"thumbs-down": "negative", "thumbs-up": "positive"}):
        says = "name each output" if not isinstance(labels, dict) else "maps none of yours to the model's neutral"
        refused_then_followed(tmp_path, three_outputs, reviews, labels, says)


def test_a_mapping_needs_a_given_model(tmp_path, two_outputs, reviews):
    """With a head fine-tuned here there is no model label to map to: the suite says to list them."""
    mapping = {"thumbs-down": "negative", "thumbs-up": "positive"}
    with pytest.raises(UsageError, match=r"tasks\[0\]\.labels: a mapping reads your labels as a given model's") as bad:
        prepared(tmp_path, suite_of(two_outputs, reviews, mapping, {"finetune": True}))
    [fix] = advice(str(bad.value))
    prepared(tmp_path, suite_of(two_outputs, reviews, fix["labels"], {"finetune": True}))


@pytest.mark.slow
def test_your_labels_on_the_real_minilm_end_to_end(tmp_path, reviews, minilm_path, fault_plugin):
    """``compbench run`` with the real MiniLM (a 2-label head named negative / positive) on the thumbs CSV: the
    baseline's predictions are the model's own argmax and its labels the outputs they were read as (both computed
    here with transformers), and report.md says the reading."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_folder = saved_classifier(tmp_path / "minilm", str(minilm_path), ["negative", "positive"], minilm_path)
    runner = Runner(tmp_path, fault_plugin, tmp_path / "cache")
    suite = {**suite_of(model_folder, reviews, ["thumbs-down", "thumbs-up"]), "runner": {"isolation": "inline"},
             "measure": {"batch_sizes": [1], "seq_lens": [32], "warmup_iters": 1, "min_iters": 2,
                         "min_seconds": 0.05}}
    done = runner.run("run", runner.write_suite("minilm", suite), "--results-dir", runner.results, "--run-id", "mine",
                      "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = [r for r in runner.rows("mine") if r["pipeline"] == "baseline"]
    dev = pd.read_csv(reviews / "dev.csv")
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForSequenceClassification.from_pretrained(model_folder).eval()
    with torch.no_grad():
        logits = model(**tokenizer(list(dev["review"]), truncation=True, max_length=32, padding=True,
                                   return_tensors="pt")).logits
    assert row["predictions"] == logits.argmax(dim=1).tolist()
    read_as = {"thumbs-down": "negative", "thumbs-up": "positive"}
    labels = json.loads((runner.results / "mine" / "labels" / "reviews.json").read_text())["validation"]
    assert labels == [model.config.label2id[read_as[label]] for label in dev["sentiment"]]
    assert "labels read as the model's: thumbs-down as negative, thumbs-up as positive" in \
        (runner.results / "mine" / "report.md").read_text()
