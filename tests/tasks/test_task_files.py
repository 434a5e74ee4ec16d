"""Tasks from files and datasets (compbench.tasks.files), on files built at test time from the real GLUE rows
beside the repo: SST-2 with renamed columns and string labels in every format, a 3-class and a multi-label file
derived from its sentences, STS-B as regression, folders of split files (the real GLUE folders too), a
save_to_disk folder, a carved validation split, and every error as one line naming file, row and column."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from compbench.common.errors import UsageError
from compbench.tasks import files
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_labels
from compbench.tasks.files import FileTaskConfig, resolve_file_task, split_of_file
from compbench.tasks.sources import DROP_REASONS_ATTR, MALFORMED_LINES_ATTR

NAMES = {0: "negative", 1: "positive"}
KEYWORDS = ("film", "movie", "story", "funny")          # multi-label tags: which of these a sentence uses


# ----------------------------------------------------------------------------------------------- the real rows


@pytest.fixture(scope="module")
def sst2(glue_data: Path) -> dict[str, pd.DataFrame]:
    """Real SST-2 rows: 1500 training rows and the 872 validation rows."""
    return {"train": pd.read_parquet(glue_data / "glue" / "sst2" / "train.parquet").head(1500),
            "validation": pd.read_parquet(glue_data / "glue" / "sst2" / "validation.parquet")}


@pytest.fixture(scope="module")
def stsb(glue_data: Path) -> dict[str, pd.DataFrame]:
    return {"train": pd.read_parquet(glue_data / "glue" / "stsb" / "train.parquet").head(1000),
            "validation": pd.read_parquet(glue_data / "glue" / "stsb" / "validation.parquet")}


def reviews(frame: pd.DataFrame) -> pd.DataFrame:
    """SST-2 rows as a user's file would have them: other column names, string labels."""
    return pd.DataFrame({"id": range(len(frame)), "review": frame["sentence"].to_numpy(),
                         "sentiment": frame["label"].map(NAMES).to_numpy()})


def write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` in the format of ``path``'s extension."""
    fmt = path.suffix
    if fmt == ".csv":
        frame.to_csv(path, index=False)
    elif fmt == ".tsv":
        frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    elif fmt == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif fmt == ".json":
        path.write_text(json.dumps({"data": frame.to_dict("records")}))
    else:
        frame.to_parquet(path)
    return path


def resolve(tmp: Path, seed: int = 0, **settings):
    return resolve_file_task(FileTaskConfig(**settings), tmp, seed)


def one_line_error(tmp: Path, *expected: str, **settings) -> str:
    """The UsageError that ``settings`` raise: one line holding every ``expected`` piece."""
    with pytest.raises(UsageError) as info:
        resolve(tmp, **settings)
    message = str(info.value)
    assert "\n" not in message, message
    for piece in expected:
        assert piece in message, f"{piece!r} not in: {message}"
    return message


REVIEWS = {"name": "reviews", "text": "review", "label": "sentiment"}


# ----------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_format_gives_the_real_rows(tmp_path: Path, sst2, ext: str) -> None:
    write(reviews(sst2["train"]), tmp_path / f"train{ext}")
    write(reviews(sst2["validation"]), tmp_path / f"dev{ext}")
    spec, source = resolve(tmp_path, data={"train": f"train{ext}", "validation": f"dev{ext}"}, **REVIEWS)
    assert spec.kind == "single_label" and spec.num_labels == 2 and not spec.is_multi_label
    assert spec.label_names == ("negative", "positive")            # inferred: sorted
    assert spec.metric_names == ("accuracy", "f1") and spec.text_fields == ("review",)
    assert spec.eval_splits == ("validation",) and spec.tsv_dir is None
    data = load_task_data(spec, source)
    for split, frame in (("train", data.train), ("validation", data.eval["validation"])):
        assert list(frame.columns) == ["review", "label"] and frame["label"].dtype == np.int64
        assert frame["review"].tolist() == sst2[split]["sentence"].tolist()
        assert frame["label"].tolist() == sst2[split]["label"].tolist()
    assert data.dropped == {"train": 0, "validation": 0}


def test_formats_are_detected_from_content(tmp_path: Path, sst2) -> None:
    """Files without a known extension: parquet by its magic bytes, JSON Lines by '{', TSV by its tabs."""
    folder = tmp_path / "odd"
    folder.mkdir()
    write(reviews(sst2["train"]), tmp_path / "a.parquet").rename(folder / "train.data")
    write(reviews(sst2["validation"]), tmp_path / "b.jsonl").rename(folder / "valid.data")
    spec, source = resolve(tmp_path, data={"train": "odd/train.data", "validation": "odd/valid.data"}, **REVIEWS)
    assert len(source.load_split(spec, "validation")) == 872
    write(reviews(sst2["validation"]), tmp_path / "c.tsv").rename(folder / "v.txt")
    assert files.sniff_format(folder / "v.txt", FileTaskConfig(data="x", **REVIEWS)) == "tsv"


def test_explicit_labels_set_the_ids_and_can_be_integers(tmp_path: Path, sst2) -> None:
    write(reviews(sst2["train"]), tmp_path / "train.csv")
    write(reviews(sst2["validation"]), tmp_path / "dev.csv")
    splits = {"train": "train.csv", "validation": "dev.csv"}
    spec, source = resolve(tmp_path, data=splits, labels=["positive", "negative"], **REVIEWS)
    assert spec.label_names == ("positive", "negative")
    labels = source.load_split(spec, "validation")["label"]
    assert labels.tolist() == (1 - sst2["validation"]["label"]).tolist()
    numeric = sst2["train"].rename(columns={"sentence": "review", "label": "sentiment"})
    write(numeric, tmp_path / "train_ids.jsonl")
    write(sst2["validation"].rename(columns={"sentence": "review", "label": "sentiment"}), tmp_path / "dev_ids.csv")
    spec, source = resolve(tmp_path, data={"train": "train_ids.jsonl", "validation": "dev_ids.csv"},
                           labels=[0, 1], **REVIEWS)
    assert spec.label_names == ("0", "1")
    assert source.load_split(spec, "validation")["label"].tolist() == sst2["validation"]["label"].tolist()


def test_text_pairs_and_a_three_class_task(tmp_path: Path, sst2) -> None:
    """Three classes from the real sentences' length; a pair task from the sentence and its reversed words."""
    def three(frame):
        words = frame["sentence"].str.split().str.len()
        size = np.where(words < 8, "short", np.where(words < 20, "medium", "long"))
        return pd.DataFrame({"a": frame["sentence"], "b": frame["sentence"].str.split().str[::-1].str.join(" "),
                             "size": size})
    write(three(sst2["train"]), tmp_path / "train.jsonl")
    write(three(sst2["validation"]), tmp_path / "validation.jsonl")
    spec, source = resolve(tmp_path, name="length", data=".", text="a", text_pair="b", label="size")
    assert spec.text_fields == ("a", "b") and spec.num_labels == 3
    assert spec.label_names == ("long", "medium", "short") and spec.metric_names == ("accuracy", "macro_f1")
    frame = source.load_split(spec, "validation")
    assert sorted(frame["label"].unique()) == [0, 1, 2]
    one_line_error(tmp_path, "metric 'f1' is for binary classification", "3 labels", "macro_f1",
                   name="length", data=".", text="a", text_pair="b", label="size", metric=["f1"])
    one_line_error(tmp_path, "metric 'auroc' is for binary", name="length", data=".", text="a", label="size",
                   metric="auroc")


def multi_label_frame(frame: pd.DataFrame) -> pd.DataFrame:
    tags = [[k for k in KEYWORDS if k in sentence.split()] for sentence in frame["sentence"]]
    return pd.DataFrame({"text": frame["sentence"].to_numpy(), "tags": tags})


def expected_multi_hot(frame: pd.DataFrame, names: tuple[str, ...]) -> list[tuple[int, ...]]:
    return [tuple(int(name in sentence.split()) for name in names) for sentence in frame["sentence"]]


@pytest.mark.parametrize("layout", ["jsonl lists", "parquet lists", "csv separator", "csv columns"])
def test_multi_label(tmp_path: Path, sst2, layout: str) -> None:
    settings = {"name": "topics", "text": "text", "label": "tags"}
    for split in ("train", "validation"):
        frame = multi_label_frame(sst2[split])
        if layout == "jsonl lists":
            write(frame, tmp_path / f"{split}.jsonl")
        elif layout == "parquet lists":
            write(frame, tmp_path / f"{split}.parquet")
        elif layout == "csv separator":
            write(frame.assign(tags=frame["tags"].str.join(";")), tmp_path / f"{split}.csv")
            settings["label_separator"] = ";"
        else:
            for keyword in KEYWORDS:
                frame[keyword] = frame["tags"].map(lambda tags, k=keyword: int(k in tags))
            write(frame.drop(columns="tags"), tmp_path / f"{split}.csv")
            settings["label"] = list(KEYWORDS)
    spec, source = resolve(tmp_path, data=".", **settings)
    assert spec.kind == "multi_label" and spec.is_multi_label and spec.num_labels == 4
    names = KEYWORDS if layout == "csv columns" else tuple(sorted(KEYWORDS))
    assert spec.label_names == names and spec.metric_names == ("micro_f1", "macro_f1")
    data = load_task_data(spec, source, limit_eval=300, seed=2)
    validation = data.eval["validation"]
    assert validation["label"].tolist() == expected_multi_hot(
        sst2["validation"].set_index("sentence").loc[validation["text"]].reset_index(), names)
    encoded = encode_labels(spec, validation)
    assert encoded.dtype == np.float32 and encoded.shape == (300, 4) and set(np.unique(encoded)) <= {0.0, 1.0}
    assert data.fingerprint == load_task_data(spec, source, limit_eval=300, seed=2).fingerprint


def test_regression_from_real_stsb_scores(tmp_path: Path, stsb) -> None:
    for split, frame in stsb.items():
        write(frame.rename(columns={"sentence1": "first", "sentence2": "second", "label": "similarity"}),
              tmp_path / f"{split}.csv")
    spec, source = resolve(tmp_path, name="similar", data=".", text="first", text_pair="second",
                           label="similarity")
    assert spec.kind == "regression" and spec.is_regression and spec.num_labels == 1 and spec.label_names is None
    assert spec.metric_names == ("pearson", "spearman")
    frame = source.load_split(spec, "validation")
    assert frame["label"].dtype == np.float64
    np.testing.assert_allclose(frame["label"], stsb["validation"]["label"], rtol=1e-6)
    one_line_error(tmp_path, "metric 'accuracy' is for", "regression task", "valid here: pearson, spearmanr",
                   name="similar", data=".", text="first", label="similarity", metric="accuracy")


def test_whole_number_scores_are_classes_unless_told(tmp_path: Path, sst2) -> None:
    frame = pd.DataFrame({"t": sst2["train"]["sentence"], "stars": np.arange(1500) % 5 + 1})
    write(frame, tmp_path / "train.csv")
    spec, _ = resolve(tmp_path, name="stars", data="train.csv", text="t", label="stars", validation_fraction=0.2)
    assert spec.kind == "single_label" and spec.label_names == ("1", "2", "3", "4", "5")
    spec, _ = resolve(tmp_path, name="stars", data="train.csv", text="t", label="stars", validation_fraction=0.2,
                      problem="regression")
    assert spec.kind == "regression"
    write(frame.assign(stars=np.arange(1500) % 40), tmp_path / "train.csv")
    one_line_error(tmp_path, "40 distinct whole numbers (0 to 39)", "problem: single_label or problem: regression",
                   name="stars", data="train.csv", text="t", label="stars", validation_fraction=0.2)


# ----------------------------------------------------------------------------------------------- folders, datasets


def test_the_real_glue_folders_are_folders_of_split_files(glue_data: Path, sst2) -> None:
    spec, source = resolve(glue_data, name="sst2_tsv", data="glue_tsv/SST-2", text="sentence", label="label")
    data = load_task_data(spec, source)
    assert len(data.train) == 67_349 and data.eval["validation"]["sentence"].tolist() == \
        sst2["validation"]["sentence"].tolist()
    assert spec.label_names == ("0", "1")
    # The parquet folder: train.parquet has no features, validation.parquet names the ClassLabel: those names.
    spec, source = resolve(glue_data, name="sst2_parquet", data="glue/sst2", text="sentence", label="label")
    assert spec.label_names == ("negative", "positive")
    assert source.load_split(spec, "validation")["label"].tolist() == sst2["validation"]["label"].tolist()
    spec, source = resolve(glue_data, name="stsb_tsv", data="glue_tsv/STS-B", text="sentence1",
                           text_pair="sentence2", label="score")
    assert spec.kind == "regression" and len(source.load_split(spec, "validation")) == 1500


def test_split_file_names() -> None:
    expected = {"train.csv": "train", "dev.tsv": "validation", "validation.jsonl": "validation",
                "valid.parquet": "validation", "test.csv.gz": "test", "train-00000-of-00002.parquet": "train",
                "README.md": None, "extra.csv": None}
    assert {name: split_of_file(Path(name)) for name in expected} == expected


def test_folder_with_a_test_split_and_hub_shards(tmp_path: Path, sst2) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(reviews(sst2["train"].iloc[:700]), data / "train-00000-of-00002.parquet")
    write(reviews(sst2["train"].iloc[700:]), data / "train-00001-of-00002.parquet")
    write(reviews(sst2["validation"].iloc[:400]), data / "validation-00000-of-00001.parquet")
    write(reviews(sst2["validation"].iloc[400:]), data / "test-00000-of-00001.parquet")
    spec, source = resolve(tmp_path, data=".", eval_split="test", **REVIEWS)
    assert spec.eval_splits == ("test",) and source.splits == ("train", "validation", "test")
    loaded = load_task_data(spec, source)
    assert loaded.train["review"].tolist() == sst2["train"]["sentence"].tolist()     # shards in order
    assert list(loaded.eval) == ["test"] and len(loaded.eval["test"]) == 472


def save_to_disk(folder: Path, splits: dict[str, pd.DataFrame]) -> None:
    """A DatasetDict written by ``datasets`` where it is installed, else the same layout by hand (Arrow stream
    files, state.json, dataset_info.json with a ClassLabel), as datasets 4 writes it."""
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        features = datasets.Features({"review": datasets.Value("string"),
                                      "sentiment": datasets.ClassLabel(names=["negative", "positive"])})
        datasets.DatasetDict({split: datasets.Dataset.from_pandas(frame, features=features, preserve_index=False)
                              for split, frame in splits.items()}).save_to_disk(str(folder))
        return
    import pyarrow as pa

    folder.mkdir()
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    info = {"features": {"review": {"dtype": "string", "_type": "Value"},
                         "sentiment": {"names": ["negative", "positive"], "_type": "ClassLabel"}}}
    for split, frame in splits.items():
        (folder / split).mkdir()
        schema = pa.schema([("review", pa.string()), ("sentiment", pa.int64())])
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        with pa.OSFile(str(folder / split / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        (folder / split / "state.json").write_text(json.dumps({
            "_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": f"hand-{split}",
            "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
            "_split": None}))
        (folder / split / "dataset_info.json").write_text(json.dumps(info))


@pytest.mark.parametrize("reader", ["datasets if installed", "pyarrow"])
def test_save_to_disk_folder(tmp_path: Path, sst2, monkeypatch, reader: str) -> None:
    splits = {split: pd.DataFrame({"review": sst2[split]["sentence"].to_numpy(),
                                   "sentiment": sst2[split]["label"].to_numpy()}) for split in ("train", "validation")}
    save_to_disk(tmp_path / "saved", splits)
    if reader == "pyarrow":
        monkeypatch.setattr(files, "_datasets_module", lambda: None)
    spec, source = resolve(tmp_path, data="saved", **REVIEWS)
    assert spec.label_names == ("negative", "positive")                     # the ClassLabel's names
    assert source.load_split(spec, "validation")["label"].tolist() == sst2["validation"]["label"].tolist()
    spec, _ = resolve(tmp_path, data="saved", labels=["positive", "negative"], **REVIEWS)
    assert spec.label_names == ("positive", "negative")
    one_line_error(tmp_path, "ClassLabel", "single_label task, not multi_label", data="saved", problem="multi_label",
                   **REVIEWS)


def test_hub_id_without_datasets_fetches_its_data_files(tmp_path: Path, sst2, monkeypatch) -> None:
    snapshot = tmp_path / "snapshot"
    (snapshot / "plain_text").mkdir(parents=True)
    write(reviews(sst2["train"]), snapshot / "plain_text" / "train-00000-of-00001.parquet")
    write(reviews(sst2["validation"]), snapshot / "plain_text" / "validation-00000-of-00001.parquet")
    asked = {}

    def fake_snapshot_download(repo_id, repo_type, allow_patterns):
        asked.update(repo_id=repo_id, repo_type=repo_type)
        return str(snapshot)

    import huggingface_hub

    monkeypatch.setattr(files, "_datasets_module", lambda: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    spec, source = resolve(tmp_path, data="someone/reviews", hf_config="plain_text", **REVIEWS)
    assert asked == {"repo_id": "someone/reviews", "repo_type": "dataset"}
    assert len(source.load_split(spec, "validation")) == 872

    def offline(**kwargs):
        raise OSError("offline: no connection to huggingface.co")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    one_line_error(tmp_path, "Hugging Face dataset someone/gone could not be fetched", "offline",
                   data="hf:someone/gone", **REVIEWS)


# ----------------------------------------------------------------------------------------------- splits


def test_validation_fraction_is_a_seeded_carve(tmp_path: Path, sst2) -> None:
    write(reviews(sst2["train"]), tmp_path / "all.csv")
    settings = {"data": "all.csv", "validation_fraction": 0.2, **REVIEWS}
    spec, source = resolve(tmp_path, seed=7, **settings)
    train, validation = source.load_split(spec, "train"), source.load_split(spec, "validation")
    assert len(validation) == 300 and len(train) == 1200
    assert set(train["review"]).isdisjoint(validation["review"])
    assert sorted(train["review"].tolist() + validation["review"].tolist()) == sorted(sst2["train"]["sentence"])
    order = sst2["train"]["sentence"].tolist()
    assert [order.index(s) for s in validation["review"]] == sorted(order.index(s) for s in validation["review"])
    _, again = resolve(tmp_path, seed=7, **settings)
    assert again.load_split(spec, "validation")["review"].tolist() == validation["review"].tolist()
    _, other = resolve(tmp_path, seed=8, **settings)
    assert other.load_split(spec, "validation")["review"].tolist() != validation["review"].tolist()
    restored = pickle.loads(pickle.dumps(source))                  # a job in another process reads it again
    assert restored.load_split(spec, "validation")["review"].tolist() == validation["review"].tolist()


def test_split_problems(tmp_path: Path, sst2) -> None:
    write(reviews(sst2["train"]), tmp_path / "train.csv")
    write(reviews(sst2["validation"]), tmp_path / "dev.csv")
    one_line_error(tmp_path, "train.csv: has no validation split", "validation_fraction", data="train.csv",
                   **REVIEWS)
    one_line_error(tmp_path, "has a validation split, and validation_fraction would carve another",
                   data={"train": "train.csv", "validation": "dev.csv"}, validation_fraction=0.1, **REVIEWS)
    one_line_error(tmp_path, "has no test split to evaluate on", data={"train": "train.csv", "validation": "dev.csv"},
                   eval_split="test", **REVIEWS)
    one_line_error(tmp_path, "nowhere.csv", "not found", data="nowhere.csv", **REVIEWS)
    one_line_error(tmp_path, "data.validation", "missing.csv", data={"train": "train.csv", "validation": "missing.csv"},
                   **REVIEWS)
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path, "holds no split files", data="empty", **REVIEWS)
    write(reviews(sst2["validation"]), tmp_path / "validation.jsonl")
    one_line_error(tmp_path, "holds the validation split in 2 formats (dev.csv, validation.jsonl)", data=".",
                   **REVIEWS)


# ----------------------------------------------------------------------------------------------- rows and errors


def test_incomplete_rows_are_dropped_and_counted(tmp_path: Path, sst2) -> None:
    train = reviews(sst2["train"])
    train.loc[[3, 10], "review"] = "   "
    train.loc[[5], "sentiment"] = ""
    write(train, tmp_path / "train.csv")
    validation = [{"review": s, "sentiment": NAMES[y]} for s, y in zip(sst2["validation"]["sentence"],
                                                                      sst2["validation"]["label"])]
    validation[0]["review"] = None
    validation[1]["sentiment"] = None
    del validation[2]["sentiment"]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in validation) + "\n\n")
    spec, source = resolve(tmp_path, data={"train": "train.csv", "validation": "dev.jsonl"}, **REVIEWS)
    frame = source.load_split(spec, "train")
    assert len(frame) == 1497 and frame.attrs[MALFORMED_LINES_ATTR] == 3
    assert frame.attrs[DROP_REASONS_ATTR] == {"missing or blank text in column 'review'": 2,
                                              "missing label in column 'sentiment'": 1}
    data = load_task_data(spec, source)
    assert data.dropped == {"train": 3, "validation": 3}
    assert data.drop_reasons["validation"] == {"missing or blank text in column 'review'": 1,
                                               "missing label in column 'sentiment'": 2}


def test_label_and_column_errors_name_file_line_and_what_is_valid(tmp_path: Path, sst2) -> None:
    write(reviews(sst2["train"]), tmp_path / "train.csv")
    dev = reviews(sst2["validation"])
    dev.loc[13, "sentiment"] = "neutral"
    write(dev, tmp_path / "dev.csv")
    splits = {"train": "train.csv", "validation": "dev.csv"}
    one_line_error(tmp_path, "dev.csv line 15", "label 'neutral' in column 'sentiment'",
                   "labels are negative, positive (inferred from the train split", data=splits, **REVIEWS)
    one_line_error(tmp_path, "labels are negative, positive (given as labels:)", data=splits,
                   labels=["negative", "positive"], **REVIEWS)
    one_line_error(tmp_path, "train.csv: has no column 'text' (the task's text); its columns: id, review, sentiment",
                   data=splits, name="reviews", text="text", label="sentiment")
    one_line_error(tmp_path, "has no column 'stars' (the task's label)", data=splits, name="reviews", text="review",
                   label="stars")
    one_line_error(tmp_path, "has no column 'title' (the task's text_pair)", data=splits, text_pair="title",
                   **REVIEWS)
    one_line_error(tmp_path, "unknown metric 'acuracy'", "did you mean 'accuracy'", data=splits, metric="acuracy",
                   **REVIEWS)
    one_line_error(tmp_path, "metric 'pearson' is for regression", "valid here: accuracy, f1", data=splits,
                   metric=["accuracy", "pearson"], **REVIEWS)


def test_malformed_files(tmp_path: Path, sst2, glue_data: Path) -> None:
    write(reviews(sst2["validation"]), tmp_path / "dev.csv")
    lines = (tmp_path / "dev.csv").read_text().splitlines()
    (tmp_path / "extra.csv").write_text("\n".join(lines[:6] + [lines[6] + ",surplus"] + lines[7:]) + "\n")
    one_line_error(tmp_path, "extra.csv line 7: 4 fields where the header has 3 (id, review, sentiment)",
                   data={"train": "extra.csv", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "short.tsv").write_text("review\tsentiment\ngood\tpositive\nbad\n")
    one_line_error(tmp_path, "short.tsv line 3: 1 fields where the header has 2", data={"train": "short.tsv",
                   "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "quote.csv").write_text('review,sentiment\n"an unclosed quote,positive\nfine,negative\n')
    one_line_error(tmp_path, "quote.csv line 2: not valid CSV", "quoting: false",
                   data={"train": "quote.csv", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "empty.csv").write_text("")
    one_line_error(tmp_path, "empty.csv: is empty", data={"train": "empty.csv", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "header.csv").write_text("review,sentiment\n")
    one_line_error(tmp_path, "the train split has no usable rows (0 read)",
                   data={"train": "header.csv", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "blank.csv").write_text("review,sentiment\n ,positive\n,negative\n")
    one_line_error(tmp_path, "blank.csv: the train split has no usable rows (2 read: 2 with missing or blank text",
                   data={"train": "blank.csv", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "bad.jsonl").write_text('{"review": "ok", "sentiment": "positive"}\n{"review": "cut off", \n')
    one_line_error(tmp_path, "bad.jsonl line 2: not valid JSON", data={"train": "bad.jsonl", "validation": "dev.csv"},
                   **REVIEWS)
    (tmp_path / "list.jsonl").write_text('{"review": "ok", "sentiment": "positive"}\n["a", "b"]\n')
    one_line_error(tmp_path, "list.jsonl line 2: a row must be a JSON object",
                   data={"train": "list.jsonl", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "number.jsonl").write_text('{"review": "ok", "sentiment": "positive"}\n{"review": 5, '
                                           '"sentiment": "negative"}\n')
    one_line_error(tmp_path, "number.jsonl line 2: column 'review' holds int 5, not text",
                   data={"train": "number.jsonl", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    one_line_error(tmp_path, "broken.parquet: is not a readable parquet file",
                   data={"train": "broken.parquet", "validation": "dev.csv"}, **REVIEWS)
    (tmp_path / "latin.csv").write_bytes("review,sentiment\ncaf\xe9 food,positive\nbad,negative\n".encode("latin-1"))
    one_line_error(tmp_path, "latin.csv: is not utf-8 text", "encoding: latin-1",
                   data={"train": "latin.csv", "validation": "dev.csv"}, **REVIEWS)
    spec, source = resolve(tmp_path, data={"train": "latin.csv", "validation": "dev.csv"}, encoding="latin-1",
                           **REVIEWS)
    assert source.load_split(spec, "train")["review"].tolist() == ["café food", "bad"]
    # STS-B's TSV has quote characters that are plain text: read with quoting on, it is refused (not merged).
    one_line_error(glue_data, "STS-B/train.tsv line 2003: not valid TSV", "quoting: false", name="stsb_quoted",
                   data="glue_tsv/STS-B", text="sentence1", label="score", quoting=True)


def test_label_errors(tmp_path: Path, sst2, stsb) -> None:
    write(reviews(sst2["validation"]), tmp_path / "dev.csv")
    single = reviews(sst2["train"]).assign(sentiment="positive")
    write(single, tmp_path / "one.csv")
    one_line_error(tmp_path, "column 'sentiment' holds 1 distinct label(s) in the train split (positive)",
                   data={"train": "one.csv", "validation": "dev.csv"}, **REVIEWS)
    scores = stsb["train"].rename(columns={"sentence1": "review", "label": "score"}).astype({"score": object})
    scores.loc[4, "score"] = "high"
    write(scores, tmp_path / "scores.csv")
    one_line_error(tmp_path, "scores.csv line 6: label 'high' in column 'score' is not a number",
                   data="scores.csv", name="sim", text="review", label="score", problem="regression",
                   validation_fraction=0.1)
    listed = [{"review": "fine", "sentiment": ["positive"]}, {"review": "bad", "sentiment": "negative"}]
    (tmp_path / "listed.jsonl").write_text("\n".join(json.dumps(r) for r in listed))
    one_line_error(tmp_path, "listed.jsonl line 1: label ['positive'] in column 'sentiment' is a list",
                   "set problem: multi_label", data={"train": "listed.jsonl", "validation": "dev.csv"},
                   problem="single_label", **REVIEWS)
    columns = pd.DataFrame({"text": ["a", "b"], "x": [1, 0], "y": [0, 2]})
    write(columns, tmp_path / "columns.csv")
    one_line_error(tmp_path, "columns.csv line 3: label column 'y' holds '2'", "0/1", data="columns.csv",
                   name="cols", text="text", label=["x", "y"], validation_fraction=0.5)


@pytest.mark.parametrize(("settings", "expected"), [
    ({"name": "sst2"}, "is a GLUE task"),
    ({"name": "my reviews"}, "no '/', spaces or '..'"),
    ({"name": "a/b"}, "no '/'"),
    ({"name": "a..b"}, "'..'"),
    ({"data": {"train": "a.csv", "dev": "b.csv"}}, "the splits are train, validation, test"),
    ({"data": {"validation": "b.csv"}}, "no train split"),
    ({"text_pair": "review"}, "both column 'review'"),
    ({"label": "review"}, "both a text column and the label"),
    ({"labels": ["a", "a"]}, "lists a twice"),
    ({"labels": [0, "0"]}, "lists 0 twice"),
    ({"labels": ["only"]}, "two or more"),
    ({"problem": "regression", "labels": ["a", "b"]}, "regression task has no labels"),
    ({"label": ["x"]}, "two or more different columns"),
    ({"delimiter": ";;"}, "one character"),
    ({"validation_fraction": 1.5}, "less than 1"),
    ({"eval_split": "train"}, "'validation' or 'test'"),
    ({"metric": []}, "empty list"),
    ({"colour": "red"}, "Extra inputs are not permitted"),
])
def test_config_is_checked(settings: dict, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        FileTaskConfig(**{"data": "x.csv", **REVIEWS, **settings})


def test_fingerprint_covers_the_label_mapping(tmp_path: Path, sst2) -> None:
    """Swapping both the file's labels and the mapping keeps every id, but the task means other labels."""
    write(reviews(sst2["train"]), tmp_path / "train.csv")
    write(reviews(sst2["validation"]), tmp_path / "dev.csv")
    swap = {"negative": "positive", "positive": "negative"}
    write(reviews(sst2["train"]).assign(sentiment=lambda f: f["sentiment"].map(swap)), tmp_path / "train2.csv")
    write(reviews(sst2["validation"]).assign(sentiment=lambda f: f["sentiment"].map(swap)), tmp_path / "dev2.csv")
    spec, source = resolve(tmp_path, data={"train": "train.csv", "validation": "dev.csv"}, **REVIEWS)
    swapped, swapped_source = resolve(tmp_path, data={"train": "train2.csv", "validation": "dev2.csv"},
                                      labels=["positive", "negative"], **REVIEWS)
    first, second = load_task_data(spec, source), load_task_data(swapped, swapped_source)
    pd.testing.assert_frame_equal(first.train, second.train)
    assert first.fingerprint != second.fingerprint


def test_task_specs_have_kinds_and_label_names() -> None:
    from compbench.tasks.glue import TASKS, TaskSpec

    assert TASKS["stsb"].kind == "regression" and TASKS["stsb"].label_names is None
    assert {spec.kind for name, spec in TASKS.items() if name != "stsb"} == {"single_label"}
    assert TASKS["sst2"].label_names == ("negative", "positive") and TASKS["sst2"].is_binary
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction") and not TASKS["mnli"].is_binary
    assert TaskSpec("t", ("x",), 1, ("pearson",), ("validation",)).kind == "regression"    # from num_labels
    multi = TaskSpec("t", ("x",), 3, ("micro_f1",), ("validation",), kind="multi_label")
    assert multi.is_multi_label and not multi.is_regression and multi.tsv_dir is None
    for bad in ({"kind": "ranking"}, {"kind": "regression"}, {"label_names": ("a", "b")}):
        with pytest.raises(ValueError):
            TaskSpec("t", ("x",), 3, ("accuracy",), ("validation",), **bad)
