"""A causal-LM task's rows from a user's own data (no model runs here): a corpus given as a folder of Hugging
Face-style split shards or a dataset id, and multiple-choice zero-shot tasks read from a file, built from real
GLUE rows; every mistake in them is one line naming the file, the row and the column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from compbench.common.errors import UsageError
from compbench.tasks.causal_lm import ZERO_SHOT_SPLIT, LanguageModelingConfig, load_language_modeling_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import detect_layout

SST2 = {"task": "sst2", "template": "Review: {sentence}\nSentiment:", "choices": [" negative", " positive"]}


def rte_shards(glue_data: Path, folder: Path) -> tuple[list[str], list[str]]:
    """RTE premises written as a hub dataset's parquet shards (``data/<split>-00000-of-00001.parquet``)."""
    source = detect_layout(glue_data / "glue")
    texts = {split: source.load_split(get_task("rte"), split)["sentence1"].head(30).tolist()
             for split in ("train", "validation")}
    (folder / "data").mkdir(parents=True)
    pd.DataFrame({"text": texts["train"]}).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    pd.DataFrame({"text": texts["validation"]}).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    return texts["train"], texts["validation"]


def sst2_as_multiple_choice(glue_data: Path, path: Path) -> pd.DataFrame:
    """SST-2 validation rows as a multiple-choice file: the answers in a list column, the label as the answer's
    text (so the task scores exactly what the GLUE zero-shot task scores)."""
    rows = detect_layout(glue_data / "glue").load_split(get_task("sst2"), "validation")
    frame = pd.DataFrame({"sentence": rows["sentence"],
                          "options": [[" negative", " positive"]] * len(rows),
                          "answer": [[" negative", " positive"][int(label)].strip() for label in rows["label"]]})
    frame.to_json(path, orient="records", lines=True)
    return rows


def test_a_corpus_folder_of_split_shards_scores_test_and_trains_on_train(tmp_path, glue_data):
    train, evaluation = rte_shards(glue_data, tmp_path / "rte-text")
    config = LanguageModelingConfig(name="rte-text", corpus="rte-text")
    data = load_language_modeling_data(config, None, tmp_path)
    assert data.eval["validation"]["text"].tolist() == [t.strip() for t in evaluation]
    assert data.train["text"].tolist() == [t.strip() for t in train]
    assert "split test" in data.source
    only_train = load_language_modeling_data(LanguageModelingConfig(name="t", corpus="rte-text", split="train"),
                                             None, tmp_path)
    assert only_train.eval["validation"]["text"].tolist() == [t.strip() for t in train]
    assert only_train.fingerprint != data.fingerprint


@pytest.mark.parametrize("entry, expected", [
    ({"split": "validation"}, "has no validation split (it has test, train)"),
    ({"column": "sentence"}, "has no column 'sentence' (has text)"),
])
def test_a_corpus_folder_mistake_is_one_line(tmp_path, glue_data, entry, expected):
    rte_shards(glue_data, tmp_path / "rte-text")
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_language_modeling_data(LanguageModelingConfig(name="t", corpus="rte-text", **entry), None, tmp_path)
    assert "\n" not in str(caught.value) and "rte-text" in str(caught.value)


def test_a_hub_corpus_offline_says_it_could_not_be_fetched(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))          # nothing cached
    config = LanguageModelingConfig(name="wiki", corpus="hf:Salesforce/wikitext", hf_config="wikitext-2-raw-v1")
    with pytest.raises(UsageError, match="Hugging Face dataset Salesforce/wikitext.*could not be"):
        load_language_modeling_data(config, None, tmp_path)


def test_a_missing_corpus_file_is_named_as_a_file(tmp_path):
    with pytest.raises(UsageError, match="corpus file .*no-such.txt does not exist"):
        load_language_modeling_data(LanguageModelingConfig(name="t", corpus="no-such.txt"), None, tmp_path)


def test_multiple_choice_rows_from_a_file_match_the_glue_zero_shot_rows(tmp_path, glue_data):
    rows = sst2_as_multiple_choice(glue_data, tmp_path / "mc.jsonl")
    mc = {"name": "sst2-mc", "data": "mc.jsonl", "template": SST2["template"], "choices_column": "options",
          "label": "answer"}
    config = LanguageModelingConfig(name="t", corpus="glue", zero_shot=[{**SST2, "limit": 40}, mc])
    source = detect_layout(glue_data / "glue")
    data = load_language_modeling_data(config, source, tmp_path, limit_eval=40)
    glue_rows, mc_rows = data.eval[ZERO_SHOT_SPLIT + "sst2"], data.eval[ZERO_SHOT_SPLIT + "sst2-mc"]
    glue_entry, mc_entry = config.zero_shot
    assert mc_entry.prompts_of(mc_rows) == glue_entry.prompts_of(glue_rows)
    assert mc_entry.choices_of(mc_rows) == [glue_entry.choices_of(glue_rows)] * 40
    assert mc_rows["label"].tolist() == glue_rows["label"].astype(int).tolist()
    assert len(mc_rows) == 40 < len(rows)
    assert config.spec().metric_names == ("perplexity", "zero_shot_sst2", "zero_shot_sst2-mc")


def test_multiple_choice_answers_filled_from_the_row_and_labels_as_indices(tmp_path, glue_data):
    source = detect_layout(glue_data / "glue")
    mrpc = source.load_split(get_task("mrpc"), "validation").head(12)
    # which sentence paraphrases sentence1: the true pair's sentence2 or another row's (a real, if easy, choice)
    frame = pd.DataFrame({"first": mrpc["sentence1"], "a": mrpc["sentence2"],
                          "b": mrpc["sentence2"].shift(1).fillna(mrpc["sentence2"].iloc[-1]),
                          "gold": [0] * len(mrpc)})
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    entry = {"name": "pairs", "data": "pairs.csv", "template": "{first}\nIn other words:",
             "choices": [" {a}", " {b}"], "label": "gold"}
    data = load_language_modeling_data(LanguageModelingConfig(name="t", corpus="glue", glue_tasks=["rte"],
                                                              zero_shot=[entry]), source, tmp_path)
    rows = data.eval[ZERO_SHOT_SPLIT + "pairs"]
    choices = LanguageModelingConfig(name="t", corpus="glue", zero_shot=[entry]).zero_shot[0].choices_of(rows)
    assert choices[0] == [" " + mrpc["sentence2"].iloc[0], " " + mrpc["sentence2"].iloc[-1]]
    assert rows["label"].tolist() == [0] * 12 and rows["prompt"].iloc[1].endswith("\nIn other words:")


@pytest.mark.parametrize("rows, entry, expected", [
    ([{"q": "x", "opts": ["a", "b"], "label": 2}], {}, "row 1: label: 2 is neither an answer index 0..1"),
    ([{"q": "x", "opts": ["a", "b"], "label": 0}, {"q": "y", "opts": ["a", "b", "c"], "label": 0}], {},
     "rows have [2, 3] answers"),
    ([{"q": "x", "opts": "a", "label": 0}], {}, "row 1: opts must hold a list of two or more answers"),
    ([{"q": "x", "opts": ["a", "b"], "label": 0}], {"template": "{question}"}, "row 1: template or choices name"),
    ([{"q": "x", "opts": ["a", "b"], "answer": 0}], {}, "has no column 'label' (has q, opts, answer)"),
])
def test_a_multiple_choice_mistake_names_the_row_and_column(tmp_path, rows, entry, expected):
    pd.DataFrame(rows).to_json(tmp_path / "mc.jsonl", orient="records", lines=True)
    zero_shot = {"name": "mc", "data": "mc.jsonl", "template": "{q}", "choices_column": "opts", **entry}
    (tmp_path / "corpus.txt").write_text("Some text to score.")
    config = LanguageModelingConfig(name="t", corpus="corpus.txt", zero_shot=[zero_shot])
    with pytest.raises(UsageError) as caught:
        load_language_modeling_data(config, None, tmp_path)
    assert expected in str(caught.value) and "mc.jsonl" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("entry, expected", [
    ({"task": "sst2", "data": "x.jsonl", "template": "{sentence}", "choices": ["a", "b"]}, "not both"),
    ({"template": "{q}", "choices": ["a", "b"]}, "not neither"),
    ({"data": "x.jsonl", "template": "{q}", "choices": ["a", "b"]}, "give the task a name"),
    ({"data": "x.jsonl", "name": "m", "template": "{q}"}, "choices_column"),
    ({"data": "x.jsonl", "name": "rte", "template": "{q}", "choices": ["a", "b"]}, "is a GLUE task"),
    ({**SST2, "choices_column": "c"}, "choices_column is for data: rows"),
])
def test_a_zero_shot_entry_says_what_it_needs(entry, expected):
    with pytest.raises(ValidationError, match=expected):
        LanguageModelingConfig(name="t", corpus="glue", zero_shot=[entry])


def test_target_delimiter_defaults_to_a_space_for_your_rows_and_nothing_for_glue_label_words():
    mc = {"name": "mc", "data": "x.jsonl", "template": "{q}", "choices_column": "c"}
    config = LanguageModelingConfig(name="t", corpus="glue", zero_shot=[SST2, mc, {**mc, "name": "glued",
                                                                                  "target_delimiter": ""}])
    assert [entry.delimiter for entry in config.zero_shot] == ["", " ", ""]
    assert LanguageModelingConfig(name="t", corpus="glue", zero_shot=[{**SST2, "target_delimiter": "\n"}]
                                  ).zero_shot[0].delimiter == "\n"
