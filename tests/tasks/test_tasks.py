"""GLUE task specs and data loading, against the real offline GLUE data beside the repo."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compbench.common.errors import DataNotFoundError, UsageError
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import TASKS, TSV_FORMATS, get_task, task_names
from compbench.tasks.metrics import METRICS
from compbench.tasks.sources import (
    DATA_DIR_ENV,
    MALFORMED_LINES_ATTR,
    GlueTsvFolderSource,
    HubSource,
    ParquetFolderSource,
    detect_layout,
    read_tsv_rows,
    resolve_data_source,
)


@pytest.fixture(scope="module")
def data_dir(glue_data: Path) -> Path:
    return glue_data


@pytest.fixture(scope="module")
def parquet(data_dir: Path) -> ParquetFolderSource:
    return ParquetFolderSource(data_dir / "glue")


@pytest.fixture(scope="module")
def tsv(data_dir: Path) -> GlueTsvFolderSource:
    return GlueTsvFolderSource(data_dir / "glue_tsv")


# ----------------------------------------------------------------------------- specs


def test_all_nine_glue_tasks() -> None:
    assert task_names() == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_spec_is_consistent(name: str) -> None:
    spec = TASKS[name]
    assert spec.name == name
    assert spec.text_fields and len(spec.text_fields) <= 2
    assert spec.metric_names and all(m in METRICS for m in spec.metric_names)
    assert spec.eval_splits and all(s.startswith("validation") for s in spec.eval_splits)
    assert spec.is_regression == (name == "stsb") == (spec.num_labels == 1)
    assert set(TSV_FORMATS[name].columns) == set(spec.text_fields)
    label_map = TSV_FORMATS[name].label_map
    if label_map is not None:
        assert sorted(label_map.values()) == list(range(spec.num_labels))


def test_official_metrics_and_splits() -> None:
    assert TASKS["cola"].metric_names == ("matthews_correlation",)
    assert TASKS["mrpc"].metric_names == TASKS["qqp"].metric_names == ("f1", "accuracy")
    assert TASKS["stsb"].metric_names == ("pearson", "spearmanr")
    assert TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert TASKS["mnli"].num_labels == 3
    assert TASKS["sst2"].tsv_dir == "SST-2" and TASKS["stsb"].tsv_dir == "STS-B"


def test_get_task_suggests_the_lowercase_name() -> None:
    assert get_task("sst2") is TASKS["sst2"]
    with pytest.raises(UsageError, match=r"did you mean 'sst2'"):
        get_task("SST2")


def test_get_task_unknown_suggests_a_close_name() -> None:
    with pytest.raises(UsageError) as info:
        get_task("sst")
    message = str(info.value)
    assert "unknown task 'sst'" in message
    assert "valid: cola, mnli, mrpc" in message
    assert "(did you mean 'sst2'?)" in message


def test_get_task_unknown_without_a_close_name() -> None:
    with pytest.raises(UsageError, match="unknown task 'imagenet'") as info:
        get_task("imagenet")
    assert "did you mean" not in str(info.value)


# ----------------------------------------------------------------------------- parquet layout

OFFICIAL_SIZES = [
    ("sst2", "validation", 872), ("sst2", "train", 67_349),
    ("cola", "validation", 1043), ("cola", "train", 8551),
    ("mrpc", "validation", 408), ("mrpc", "train", 3668),
    ("rte", "validation", 277), ("rte", "train", 2490),
    ("stsb", "validation", 1500), ("stsb", "train", 5749),
]


@pytest.mark.parametrize(("name", "split", "rows"), OFFICIAL_SIZES)
def test_parquet_layout_has_official_sizes(parquet: ParquetFolderSource, name: str, split: str,
                                           rows: int) -> None:
    task = TASKS[name]
    frame = parquet.load_split(task, split)
    assert len(frame) == rows
    assert list(frame.columns) == [*task.text_fields, "label"]
    assert frame["label"].dtype == (np.float64 if task.is_regression else np.int64)
    assert frame["label"].min() >= 0
    if not task.is_regression:
        assert frame["label"].max() == task.num_labels - 1


def test_parquet_accepts_hub_shard_names(tmp_path: Path, parquet: ParquetFolderSource) -> None:
    rows = parquet.load_split(TASKS["rte"], "validation")
    (tmp_path / "rte").mkdir()
    rows.iloc[:200].to_parquet(tmp_path / "rte" / "validation-00000-of-00002.parquet")
    rows.iloc[200:].to_parquet(tmp_path / "rte" / "validation-00001-of-00002.parquet")
    loaded = ParquetFolderSource(tmp_path).load_split(TASKS["rte"], "validation")
    pd.testing.assert_frame_equal(loaded, rows)


# ----------------------------------------------------------------------------- TSV layout


@pytest.mark.parametrize("split", ["validation", "train"])
def test_tsv_sst2_matches_parquet(parquet: ParquetFolderSource, tsv: GlueTsvFolderSource,
                                  split: str) -> None:
    task = TASKS["sst2"]
    from_tsv, from_parquet = tsv.load_split(task, split), parquet.load_split(task, split)
    assert len(from_tsv) == len(from_parquet) == (872 if split == "validation" else 67_349)
    assert from_tsv.attrs[MALFORMED_LINES_ATTR] == 0
    assert from_tsv["label"].dtype == np.int64
    np.testing.assert_array_equal(from_tsv["label"], from_parquet["label"])
    assert from_tsv["sentence"].tolist() == from_parquet["sentence"].tolist()


@pytest.mark.parametrize(("split", "rows"), [("validation", 1500), ("train", 5749)])
def test_tsv_stsb_matches_parquet(parquet: ParquetFolderSource, tsv: GlueTsvFolderSource,
                                  split: str, rows: int) -> None:
    task = TASKS["stsb"]
    from_tsv, from_parquet = tsv.load_split(task, split), parquet.load_split(task, split)
    assert len(from_tsv) == len(from_parquet) == rows
    assert from_tsv.attrs[MALFORMED_LINES_ATTR] == 0
    assert from_tsv["label"].dtype == np.float64
    np.testing.assert_allclose(from_tsv["label"], from_parquet["label"], atol=1e-6, rtol=0)
    for column in task.text_fields:
        assert from_tsv[column].tolist() == from_parquet[column].tolist()


def test_tsv_keeps_unbalanced_quotes_verbatim(tsv: GlueTsvFolderSource) -> None:
    frame = tsv.load_split(TASKS["stsb"], "train")
    quoted = frame[frame["sentence1"].str.contains('"', regex=False)]
    assert len(quoted) > 0
    assert 'A dog in a "superman" shirt sleeps on a blanket.' in quoted["sentence1"].tolist()


def test_read_tsv_rows_skips_and_counts_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text('a\tb\n"open quote\t1\ntoo\tmany\tfields\nshort\nok\t2\r\n', encoding="utf-8")
    header, rows, malformed = read_tsv_rows(path, None)
    assert header == ["a", "b"]
    assert rows == [['"open quote', "1"], ["ok", "2"]]
    assert malformed == 2


def _write(path: Path, lines: list[str], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def test_tsv_formats_of_tasks_not_available_offline(tmp_path: Path) -> None:
    """Tiny files in the original GLUE formats: headerless CoLA, MRPC with a BOM, string labels."""
    _write(tmp_path / "CoLA" / "dev.tsv", ["gj04\t1\t\tOur friends won't buy this.",
                                           "gj04\t0\t*\tThey drank the pub."])
    _write(tmp_path / "MRPC" / "dev.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                           "1\t1\t2\tHe said \"hi.\tHe said hi."], bom=True)
    _write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel",
                                          "0\tA b.\tA.\tentailment", "1\tC.\tD.\tnot_entailment"])
    _write(tmp_path / "QNLI" / "dev.tsv", ["index\tquestion\tsentence\tlabel", "0\tWho?\tHim.\tnot_entailment"])
    _write(tmp_path / "WNLI" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tX.\tY.\t1"])
    _write(tmp_path / "QQP" / "dev.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                          "7\t1\t2\tWhy?\tHow?\t0", "8\t3\t4\tbroken line"])
    mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [mnli_header, "0\t1\t1a\tfiction\tP.\tH.\tneutral\tneutral",
                                                      "1\t2\t2a\tfiction\tQ.\tI.\tcontradiction\tcontradiction"])
    source = GlueTsvFolderSource(tmp_path)
    cola = source.load_split(TASKS["cola"], "validation")
    assert cola.to_dict("list") == {"sentence": ["Our friends won't buy this.", "They drank the pub."],
                                    "label": [1, 0]}
    mrpc = source.load_split(TASKS["mrpc"], "validation")
    assert mrpc.to_dict("list") == {"sentence1": ['He said "hi.'], "sentence2": ["He said hi."], "label": [1]}
    assert source.load_split(TASKS["rte"], "validation")["label"].tolist() == [0, 1]
    qnli = source.load_split(TASKS["qnli"], "validation")
    assert qnli.to_dict("list") == {"question": ["Who?"], "sentence": ["Him."], "label": [1]}
    assert source.load_split(TASKS["wnli"], "validation")["label"].tolist() == [1]
    qqp = source.load_split(TASKS["qqp"], "validation")
    assert qqp.to_dict("list") == {"question1": ["Why?"], "question2": ["How?"], "label": [0]}
    assert qqp.attrs[MALFORMED_LINES_ATTR] == 1
    mnli = source.load_split(TASKS["mnli"], "validation_mismatched")
    assert mnli.to_dict("list") == {"premise": ["P.", "Q."], "hypothesis": ["H.", "I."], "label": [1, 2]}


def test_tsv_with_wrong_header_names_file_and_columns(tmp_path: Path) -> None:
    _write(tmp_path / "SST-2" / "dev.tsv", ["text\tlabel", "fine\t1"])
    with pytest.raises(DataNotFoundError, match=r"dev\.tsv lacks column\(s\) sentence"):
        GlueTsvFolderSource(tmp_path).load_split(TASKS["sst2"], "validation")


# ----------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["qqp", "mnli", "qnli"])
def test_missing_parquet_task_names_the_path(parquet: ParquetFolderSource, data_dir: Path,
                                             name: str) -> None:
    task = TASKS[name]
    with pytest.raises(DataNotFoundError) as info:
        parquet.load_split(task, task.eval_splits[0])
    assert str(data_dir / "glue" / name / f"{task.eval_splits[0]}.parquet") in str(info.value)


@pytest.mark.parametrize("name", ["qqp", "mnli", "qnli", "cola"])
def test_missing_tsv_task_names_the_path(tsv: GlueTsvFolderSource, data_dir: Path, name: str) -> None:
    task = TASKS[name]
    with pytest.raises(DataNotFoundError) as info:
        tsv.load_split(task, task.eval_splits[0])
    expected = "dev_matched.tsv" if name == "mnli" else "dev.tsv"
    assert str(data_dir / "glue_tsv" / task.tsv_dir / expected) in str(info.value)


def test_load_task_data_for_missing_task_raises(parquet: ParquetFolderSource) -> None:
    with pytest.raises(DataNotFoundError, match="qqp/train"):
        load_task_data(TASKS["qqp"], parquet)


# ----------------------------------------------------------------------------- layouts and precedence


def test_detect_layout(data_dir: Path) -> None:
    assert isinstance(detect_layout(data_dir / "glue"), ParquetFolderSource)
    assert isinstance(detect_layout(data_dir / "glue_tsv"), GlueTsvFolderSource)
    parent = detect_layout(data_dir)
    assert isinstance(parent, ParquetFolderSource) and parent.root == data_dir / "glue"
    assert parent.description == f"local parquet folder {data_dir / 'glue'}"


def test_detect_layout_parent_with_only_tsv(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "glue_tsv").symlink_to(data_dir / "glue_tsv")
    source = detect_layout(tmp_path)
    assert isinstance(source, GlueTsvFolderSource) and source.root == tmp_path / "glue_tsv"


def test_detect_layout_rejects_missing_and_unknown_folders(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "nope")) + ".*does not exist"):
        detect_layout(tmp_path / "nope")
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "notes.txt").write_text("x")
    with pytest.raises(DataNotFoundError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "parquet" in message and "SST-2/dev.tsv" in message


def test_resolve_precedence(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    glue, glue_tsv = str(data_dir / "glue"), data_dir / "glue_tsv"
    monkeypatch.setenv(DATA_DIR_ENV, str(glue_tsv))
    cli = resolve_data_source(glue, glue_tsv)
    assert isinstance(cli, ParquetFolderSource) and cli.description.endswith("(from --data-dir)")
    env = resolve_data_source(None, data_dir / "glue")
    assert isinstance(env, GlueTsvFolderSource)
    assert env.description == f"local GLUE TSV folder {glue_tsv} (from {DATA_DIR_ENV})"
    monkeypatch.delenv(DATA_DIR_ENV)
    suite = resolve_data_source(None, glue_tsv)
    assert isinstance(suite, GlueTsvFolderSource) and "suite" in suite.description
    hub = resolve_data_source(None, None)
    assert isinstance(hub, HubSource) and hub.description.startswith("hub dataset nyu-mll/glue")


def test_resolve_hub_literal(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    assert isinstance(resolve_data_source("hub", data_dir), HubSource)
    monkeypatch.setenv(DATA_DIR_ENV, "hub")
    from_env = resolve_data_source(None, data_dir)
    assert isinstance(from_env, HubSource) and DATA_DIR_ENV in from_env.description
    assert isinstance(resolve_data_source(str(data_dir), None), ParquetFolderSource)
    monkeypatch.delenv(DATA_DIR_ENV)
    assert isinstance(resolve_data_source(None, "hub"), HubSource)


def test_resolve_named_missing_folder_does_not_fall_back_to_hub(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="from --data-dir"):
        resolve_data_source(str(tmp_path / "missing"), None)


# ----------------------------------------------------------------------------- hub (never the network)


def _fake_hub(monkeypatch: pytest.MonkeyPatch, download) -> list[dict]:
    calls: list[dict] = []

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        return download(**kwargs)

    module = types.ModuleType("huggingface_hub")
    module.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return calls


def test_hub_failure_is_data_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nmore details")

    calls = _fake_hub(monkeypatch, offline)
    with pytest.raises(DataNotFoundError) as info:
        HubSource().load_split(TASKS["qqp"], "validation")
    message = str(info.value)
    assert "could not fetch nyu-mll/glue/qqp/validation from the Hugging Face hub" in message
    assert "OSError: We couldn't connect" in message and "more details" not in message
    assert "--data-dir" in message and DATA_DIR_ENV in message
    assert calls == [{"repo_id": "nyu-mll/glue", "repo_type": "dataset",
                      "allow_patterns": ["qqp/validation-*.parquet"]}]


def test_hub_delegates_to_the_downloaded_parquet_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        parquet: ParquetFolderSource) -> None:
    rows = parquet.load_split(TASKS["rte"], "validation")
    (tmp_path / "rte").mkdir()
    rows.to_parquet(tmp_path / "rte" / "validation-00000-of-00001.parquet")
    _fake_hub(monkeypatch, lambda **kwargs: str(tmp_path))
    pd.testing.assert_frame_equal(HubSource().load_split(TASKS["rte"], "validation"), rows)


# ----------------------------------------------------------------------------- load_task_data


@pytest.fixture(scope="module")
def rte_full(parquet: ParquetFolderSource):
    return load_task_data(TASKS["rte"], parquet)


def test_load_task_data_full(rte_full, parquet: ParquetFolderSource) -> None:
    assert len(rte_full.train) == 2490 and list(rte_full.eval) == ["validation"]
    assert len(rte_full.eval["validation"]) == 277
    assert rte_full.source == parquet.description
    assert rte_full.dropped == {"train": 0, "validation": 0}
    assert len(rte_full.fingerprint) == 64


def test_seeded_limits_are_reproducible(parquet: ParquetFolderSource) -> None:
    task = TASKS["sst2"]
    first = load_task_data(task, parquet, limit_train=500, limit_eval=100, seed=3)
    again = load_task_data(task, parquet, limit_train=500, limit_eval=100, seed=3)
    other = load_task_data(task, parquet, limit_train=500, limit_eval=100, seed=4)
    assert len(first.train) == 500 and len(first.eval["validation"]) == 100
    assert list(first.train.index) == list(range(500))
    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.eval["validation"], again.eval["validation"])
    assert first.fingerprint == again.fingerprint
    assert first.train["sentence"].tolist() != other.train["sentence"].tolist()
    assert first.fingerprint != other.fingerprint


def test_limit_larger_than_split_keeps_all_rows_in_order(rte_full, parquet: ParquetFolderSource) -> None:
    data = load_task_data(TASKS["rte"], parquet, limit_eval=10_000)
    pd.testing.assert_frame_equal(data.eval["validation"], rte_full.eval["validation"])
    assert data.fingerprint != rte_full.fingerprint  # the limit is part of the fingerprint


def test_fingerprint_changes_with_content(tmp_path: Path, rte_full) -> None:
    (tmp_path / "rte").mkdir()
    rte_full.train.to_parquet(tmp_path / "rte" / "train.parquet")
    changed = rte_full.eval["validation"].copy()
    changed.loc[0, "label"] = 1 - changed.loc[0, "label"]
    changed.to_parquet(tmp_path / "rte" / "validation.parquet")
    assert load_task_data(TASKS["rte"], ParquetFolderSource(tmp_path)).fingerprint != rte_full.fingerprint


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_invalid_limits_are_usage_errors(parquet: ParquetFolderSource, bad) -> None:
    with pytest.raises(UsageError, match="limit_eval must be a positive integer"):
        load_task_data(TASKS["rte"], parquet, limit_eval=bad)


def test_unlabelled_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "stsb").mkdir()
    train = pd.DataFrame({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "label": [1.5, -1.0, None]})
    train.to_parquet(tmp_path / "stsb" / "train.parquet")
    train.iloc[:1].to_parquet(tmp_path / "stsb" / "validation.parquet")
    data = load_task_data(TASKS["stsb"], ParquetFolderSource(tmp_path))
    assert data.train["label"].tolist() == [1.5]
    assert data.dropped == {"train": 2, "validation": 0}


def test_out_of_range_labels_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "rte").mkdir()
    frame = pd.DataFrame({"sentence1": ["a"], "sentence2": ["b"], "label": [2]})
    for split in ("train", "validation"):
        frame.to_parquet(tmp_path / "rte" / f"{split}.parquet")
    with pytest.raises(DataNotFoundError, match="has label 2, but rte has 2 labels"):
        load_task_data(TASKS["rte"], ParquetFolderSource(tmp_path))


def test_split_with_no_labelled_rows_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sst2").mkdir()
    frame = pd.DataFrame({"sentence": ["a", "b"], "label": [-1, -1]})
    for split in ("train", "validation"):
        frame.to_parquet(tmp_path / "sst2" / f"{split}.parquet")
    with pytest.raises(DataNotFoundError, match="sst2/train .* has no labelled rows"):
        load_task_data(TASKS["sst2"], ParquetFolderSource(tmp_path))


def test_tsv_and_parquet_give_the_same_stsb_rows(data_dir: Path) -> None:
    kwargs = {"limit_train": 50, "limit_eval": 20, "seed": 1}
    from_tsv = load_task_data(TASKS["stsb"], detect_layout(data_dir / "glue_tsv"), **kwargs)
    from_parquet = load_task_data(TASKS["stsb"], detect_layout(data_dir), **kwargs)
    assert from_tsv.eval["validation"]["sentence1"].tolist() == from_parquet.eval["validation"]["sentence1"].tolist()
    np.testing.assert_allclose(from_tsv.train["label"], from_parquet.train["label"], atol=1e-6)
