"""Tasks from a user's own files and datasets: a suite's ``tasks:`` entry that is a mapping, e.g.

```yaml
tasks:
  - sst2                                   # a GLUE task, as before
  - name: reviews
    data: {train: data/train.csv, validation: data/dev.csv}
    text: review
    label: sentiment
    labels: [negative, positive]
    metric: [f1, accuracy]
```

:class:`FileTaskConfig` is that mapping; :func:`resolve_file_task` reads the files, settles the task's kind and
label mapping, and returns the :class:`~compbench.tasks.glue.TaskSpec` and a :class:`FileTaskSource` whose
``load_split`` returns the rows the way every other source does (``spec.text_fields`` + ``label``).

Where the rows come from (``data``)
    one file (the train split; give ``validation_fraction``), a ``{train:, validation:, test:}`` mapping (a
    file, or a list of files, each), a folder of split files (``train.csv``, ``validation.jsonl``,
    ``dev.tsv``, ``test.parquet``, hub shards ``train-00000-of-00001.parquet``; also under its ``data/``), a
    folder written by ``datasets``' ``save_to_disk`` (a ``DatasetDict``, or one ``Dataset`` as train), or a
    Hugging Face dataset id (``owner/name``, ``hf:owner/name`` or ``format: hf``; ``hf_config`` picks its
    configuration). Relative paths resolve against the suite's folder.
Formats
    CSV, TSV, JSON Lines, JSON (an array of objects, an object holding one, or columns), parquet, from the
    extension (``.gz`` for the text formats) or else from the content; ``datasets`` reads ``save_to_disk``
    folders and hub ids where it is installed (else pyarrow reads the folder's Arrow files and
    ``huggingface_hub`` fetches the id's data files). CSV/TSV: a header line names the columns;
    ``delimiter``, ``quotechar``, ``quoting`` (on for CSV, off for TSV, as GLUE's TSVs need) and ``encoding``.
Labels and kinds (``problem``)
    ``single_label`` (ids 0..n-1, int64 ``label``), ``multi_label`` (``label`` a tuple of 0/1 per label, in id
    order: multi-hot; encoded as a float32 matrix for BCE) or ``regression`` (float64 ``label``).
    ``problem: auto`` decides conservatively, from the train split: list-valued labels, a ``label_separator``
    or several ``label`` columns (one 0/1 column per label) mean multi-label; a Hugging Face ``ClassLabel``
    means single-label (``Sequence(ClassLabel)`` multi-label) with its names; ``labels:`` given means
    single-label; numbers that are not all whole (STS-B's 3.8) mean regression, whole numbers mean classes
    -- unless there are more than ``MAX_INFERRED_INTEGER_CLASSES`` distinct ones, which could be either
    (ratings, counts, years): then it asks for ``problem:``; anything else (text) means classes. The
    label mapping is ``labels:`` (in id order: a given model's output order; or, for a given model, a
    mapping of each label to the model label it means, put in the model's order) or inferred: ClassLabel
    names in their order, else the train split's distinct labels sorted (numerically where they are
    numbers; a given model's own labels in its order). A label outside the mapping, in any split, is an
    error that names it.
Splits
    ``train`` always; the evaluation split ``eval_split`` (``validation``, or ``test``); a ``validation``
    split that the data lacks is carved from train with ``validation_fraction``, seeded by the suite's
    data seed (the carved rows are not trained on).
What is dropped, and what is an error
    A row whose text is missing or blank, or whose label is missing (empty cell, JSON null, ClassLabel -1), is
    dropped and counted per split and reason (``MALFORMED_LINES_ATTR`` / ``DROP_REASONS_ATTR`` on the frame,
    so ``TaskData.dropped`` / ``TaskData.drop_reasons`` and the rows carry them). Everything else stops with a
    one-line :class:`UsageError` naming the file, the line or row, the column and the value, and what would
    be valid: a missing column (the file's columns listed), a malformed line, a label outside the mapping, a
    split with no usable rows, an unreadable file, an unknown metric or one that does not fit the task.
Metrics (``metric``)
    A name or a list (the first is the headline) from ``compbench.tasks.metrics``; by default binary:
    ``accuracy, f1``; more classes: ``accuracy, macro_f1``; multi-label: ``micro_f1, macro_f1``; regression:
    ``pearson, spearman``.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from compbench.common.errors import UsageError
from compbench.tasks.glue import TASKS, TaskSpec
from compbench.tasks.metrics import default_metrics, metric_problem
from compbench.tasks.sources import DROP_REASONS_ATTR, MALFORMED_LINES_ATTR, DataSource, _short_reason

SPLITS = ("train", "validation", "test")
# File (and dataset split) names that mean each split.
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test"}
FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "hf")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
              ".parquet": "parquet", ".pq": "parquet"}
# With ``problem: auto``, more distinct whole-number labels than this could be classes or a score: ask.
MAX_INFERRED_INTEGER_CLASSES = 20
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
HUB_PREFIX = "hf:"
# Files a Hugging Face hub snapshot is fetched for (when ``datasets`` is not installed).
HUB_DATA_PATTERNS = ["*.parquet", "*.csv", "*.tsv", "*.jsonl", "*.json", "*.csv.gz", "*.tsv.gz", "*.jsonl.gz"]

Problem = Literal["auto", "single_label", "multi_label", "regression"]
LabelValue = Union[StrictStr, StrictInt]


class FileTaskConfig(BaseModel):
    """A task read from files or a dataset (a mapping in the suite's ``tasks:``); see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the task's name in rows and reports (letters, digits, _ . + -; not a GLUE name)")
    data: str | dict[str, str | list[str]] = Field(
        description="a file, a folder of split files, a {train:, validation:, test:} mapping, a save_to_disk "
                    "folder, or a Hugging Face dataset id")
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "hf"] = Field(
        "auto", description="auto: from the file's extension, else its content")
    delimiter: str | None = Field(None, description="CSV/TSV field separator (default , for CSV, a tab for TSV)")
    quotechar: str = Field('"', description="CSV/TSV quote character")
    quoting: bool | None = Field(None, description="whether quotes enclose fields (default: CSV yes, TSV no)")
    encoding: str = Field("utf-8", description="text encoding of CSV/TSV/JSON files")
    text: str = Field(description="the column holding the text")
    text_pair: str | None = Field(None, description="the column holding the second text of a pair")
    label: str | list[str] = Field(description="the label column (several 0/1 columns: one per label, multi-label)")
    labels: list[LabelValue] | dict[LabelValue, LabelValue] | None = Field(
        None, description="the labels in id order (a given model's output order), or a mapping of each label to the "
                          "given model's label it means (default: inferred)")
    problem: Problem = Field("auto", description="single_label, multi_label or regression (auto: inferred)")
    label_separator: str | None = Field(None, description="separates a multi-label row's labels in one string")
    metric: str | list[str] | None = Field(None, description="metric name(s), the first the headline")
    validation_fraction: float | None = Field(
        None, gt=0, lt=1, description="share of train carved (seeded) into validation when the data has none")
    eval_split: Literal["validation", "test"] = Field("validation", description="the split rows are scored on")
    hf_config: str | None = Field(None, description="a Hugging Face dataset's configuration (e.g. sst2)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value) or ".." in value:
            raise ValueError(f"task name {value!r} may hold only letters, digits and _ . + - (no '/', spaces "
                             "or '..'), starting with a letter or digit")
        if value in TASKS:
            raise ValueError(f"task name {value!r} is a GLUE task; give your task another name")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value):
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("data is empty: give a file, a folder, a {train:, validation:} mapping or a "
                                 "dataset id")
            return value
        unknown = [key for key in value if key not in SPLITS]
        if unknown:
            raise ValueError(f"data has split(s) {', '.join(map(repr, unknown))}; the splits are "
                             f"{', '.join(SPLITS)}")
        if "train" not in value:
            raise ValueError("data names no train split")
        for split, paths in value.items():
            if (isinstance(paths, str) and not paths.strip()) or (isinstance(paths, list) and not paths):
                raise ValueError(f"data.{split} is empty")
        return value

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be one character, got {value!r}")
        return value

    @field_validator("label_separator")
    @classmethod
    def _separator(cls, value: str | None) -> str | None:
        if value is not None and value == "":
            raise ValueError("label_separator is empty")
        return value

    @field_validator("metric")
    @classmethod
    def _metrics(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("metric is an empty list")
            repeated = sorted({m for m in value if value.count(m) > 1})
            if repeated:
                raise ValueError(f"metric lists {', '.join(repeated)} twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "FileTaskConfig":
        label_columns = self.label if isinstance(self.label, list) else [self.label]
        texts = [self.text] + ([self.text_pair] if self.text_pair is not None else [])
        if self.text_pair is not None and self.text_pair == self.text:
            raise ValueError(f"text and text_pair are both column {self.text!r}")
        if "label" in texts and self.label != "label":
            raise ValueError("a text column may not be called 'label' unless it is the label column")
        clash = [column for column in label_columns if column in texts]
        if clash:
            raise ValueError(f"column {clash[0]!r} is both a text column and the label")
        if isinstance(self.label, list):
            if len(self.label) < 2 or len(set(self.label)) != len(self.label):
                raise ValueError("label as a list names one 0/1 column per label: two or more different columns")
            if self.problem not in ("auto", "multi_label"):
                raise ValueError(f"several label columns make a multi-label task, not {self.problem}")
            if self.labels is not None or self.label_separator is not None:
                raise ValueError("with several label columns, the columns are the labels: drop labels / "
                                 "label_separator")
        if self.problem == "regression" and (self.labels is not None or self.label_separator is not None):
            raise ValueError("a regression task has no labels / label_separator")
        if self.label_separator is not None and self.problem == "single_label":
            raise ValueError("label_separator splits several labels per row: that is problem: multi_label")
        if self.labels is not None:
            keys = [_class_key(value) for value in self.labels]
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise ValueError(f"labels lists {', '.join(repeated)} twice")
            if len(keys) < 2:
                raise ValueError("labels needs two or more labels")
        if isinstance(self.labels, dict):
            by_meaning: dict[str, list[str]] = {}
            for key, value in self.labels.items():
                by_meaning.setdefault(str(value).casefold(), []).append(str(key))
            shared, both = next(((value, keys) for value, keys in by_meaning.items() if len(keys) > 1), (None, None))
            if both:
                raise ValueError(f"labels maps {' and '.join(both)} to the same model label {shared!r}: "
                                 "one output cannot be two labels; fine-tune a head for them (teacher: {finetune: "
                                 f"true}}) with labels: {labels_yaml([str(key) for key in self.labels])}")
        return self


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DataInput:
    """One file or dataset split that holds rows of a split: ``kind`` file (``path`` in ``format``), disk (a
    ``save_to_disk`` Dataset folder) or hub (dataset id ``path``, its split ``split``)."""

    kind: Literal["file", "disk", "hub"]
    path: str
    format: str
    split: str | None = None
    hf_config: str | None = None

    @property
    def where(self) -> str:
        if self.kind == "hub":
            config = f" ({self.hf_config})" if self.hf_config else ""
            return f"Hugging Face dataset {self.path}{config} split {self.split}"
        return self.path


@dataclass
class Table:
    """Rows as read from one input: values by column, each row's line in the file (text formats) and the
    ``ClassLabel`` names of columns whose features have them."""

    where: str
    columns: dict[str, list]
    lines: list[int] | None = None
    class_names: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # column -> (class|classes, names)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def at(self, index: int) -> str:
        """``path line 12`` (or ``row 12`` where there are no lines)."""
        return f"{self.where} line {self.lines[index]}" if self.lines is not None else f"{self.where} row {index + 1}"


def _fail(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


def _open_text(path: Path, encoding: str):
    encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def _decode_error(path: Path, exc: UnicodeDecodeError, encoding: str) -> UsageError:
    return _fail(str(path), f"is not {encoding} text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                            f"{exc.start} of a chunk): give its encoding, e.g. encoding: latin-1")


_FIELD_LIMIT = 1 << 26


def read_delimited(path: Path, fmt: str, config: FileTaskConfig) -> Table:
    """A CSV/TSV file with a header line; a line with another number of fields than the header is an error."""
    delimiter = config.delimiter or ("\t" if fmt == "tsv" else ",")
    quoting = config.quoting if config.quoting is not None else fmt != "tsv"
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)   # long texts: the default (128 KiB) would refuse a long review
    quote_hint = ("; quotes open quoted fields here: set quoting: false if they are plain text in this file"
                  if quoting else "")
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with _open_text(path, config.encoding) as handle:
            reader = csv.reader(handle, delimiter=delimiter, quotechar=config.quotechar, strict=True,
                                quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
            while True:
                start = reader.line_num + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise _fail(f"{path} line {start}", f"not valid {fmt.upper()}: {exc}{quote_hint}") from None
                if not record:
                    continue                                  # a blank line is no row
                if header is None:
                    header = [name.strip() for name in record]
                    repeated = sorted({n for n in header if header.count(n) > 1})
                    if repeated:
                        raise _fail(f"{path} line {start}", f"the header names column {repeated[0]!r} twice")
                    continue
                if len(record) != len(header):
                    shown = record[0][:60] + ("..." if len(record[0]) > 60 else "")
                    raise _fail(f"{path} line {start}",
                                f"{len(record)} fields where the header has {len(header)} "
                                f"({', '.join(header)}); the line starts {shown!r}: check delimiter "
                                f"({delimiter!r}){quote_hint}")
                rows.append(record)
                lines.append(start)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, config.encoding) from None
    except (OSError, EOFError) as exc:
        raise _fail(str(path), f"cannot be read: {_short_reason(exc)}") from None
    if header is None:
        raise _fail(str(path), "is empty: expected a header line naming the columns, then one row per line")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    return Table(str(path), columns, lines)


def _columns_of_records(records: list, where: str, unit: str, starts: list[int] | None) -> dict[str, list]:
    names: dict[str, None] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            place = f"{unit} {starts[index] if starts else index + 1}"
            raise _fail(f"{where} {place}", f"a row must be a JSON object {{\"column\": value, ...}}, got "
                                            f"{type(record).__name__} {_show(record)}")
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def read_jsonl(path: Path, config: FileTaskConfig) -> Table:
    """JSON Lines: one object per non-blank line."""
    records, lines = [], []
    try:
        with _open_text(path, config.encoding) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise _fail(f"{path} line {number}", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                lines.append(number)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, config.encoding) from None
    except (OSError, EOFError) as exc:
        raise _fail(str(path), f"cannot be read: {_short_reason(exc)}") from None
    return Table(str(path), _columns_of_records(records, str(path), "line", lines), lines)


def read_json(path: Path, config: FileTaskConfig) -> Table:
    """A JSON array of objects, an object holding one such array (``{"data": [...]}``), or columns
    (``{"text": [...], "label": [...]}``); a ``.json`` file that is JSON Lines is read as such."""
    try:
        with _open_text(path, config.encoding) as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, config.encoding) from None
    except (OSError, EOFError) as exc:
        raise _fail(str(path), f"cannot be read: {_short_reason(exc)}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return read_jsonl(path, config)
        raise _fail(f"{path} line {exc.lineno}", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in document[lists[0]]):
            document = document[lists[0]]
        elif document and len(lists) == len(document) and len({len(document[k]) for k in lists}) == 1:
            return Table(str(path), dict(document))
        else:
            raise _fail(str(path), "expected an array of row objects, an object holding one such array, or "
                                   "an object of equally long column arrays")
    if not isinstance(document, list):
        raise _fail(str(path), f"expected an array of row objects, got {type(document).__name__}")
    return Table(str(path), _columns_of_records(document, str(path), "row", None))


def features_from_json(features: Any) -> dict[str, tuple[str, list[str]]]:
    """ClassLabel names by column from a ``datasets`` features dict (``dataset_info.json``, parquet metadata):
    ``("class", names)`` for a ClassLabel, ``("classes", names)`` for a list of them."""
    found: dict[str, tuple[str, list[str]]] = {}
    if not isinstance(features, dict):
        return found

    def class_label(feature) -> list[str] | None:
        if (isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
                and isinstance(feature.get("names"), list)):
            return [str(name) for name in feature["names"]]
        return None

    for column, feature in features.items():
        names = class_label(feature)
        if names is not None:
            found[column] = ("class", names)
            continue
        inner = None
        if isinstance(feature, dict) and feature.get("_type") in ("Sequence", "List", "LargeList"):
            inner = feature.get("feature")
        elif isinstance(feature, list) and len(feature) == 1:
            inner = feature[0]
        names = class_label(inner)
        if names is not None:
            found[column] = ("classes", names)
    return found


def _arrow_table(table, where: str, features: Any = None) -> Table:
    return Table(where, table.to_pydict(), None, features_from_json(features))


def read_parquet(path: Path) -> Table:
    """A parquet file (the ClassLabel names of a Hugging Face export come from its metadata)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:    # ArrowInvalid, OSError: not parquet, cut off, unreadable
        raise _fail(str(path), f"is not a readable parquet file ({_short_reason(exc)})") from None
    features = None
    metadata = (table.schema.metadata or {}).get(b"huggingface")
    if metadata:
        try:
            features = json.loads(metadata).get("info", {}).get("features")
        except (ValueError, AttributeError):
            features = None
    return _arrow_table(table, str(path), features)


def _datasets_module():
    """The ``datasets`` package, or None where it is not installed."""
    try:
        import datasets
    except ImportError:
        return None
    return datasets


def _features_of_dataset(dataset) -> dict[str, tuple[str, list[str]]]:
    """ClassLabel names by column of a ``datasets.Dataset``."""
    found = {}
    for column, feature in dataset.features.items():
        names = getattr(feature, "names", None)
        if isinstance(names, list):
            found[column] = ("class", [str(n) for n in names])
            continue
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
        if isinstance(names, list):
            found[column] = ("classes", [str(n) for n in names])
    return found


def _dataset_table(dataset, where: str) -> Table:
    table = dataset.with_format("arrow")[:]
    return Table(where, table.to_pydict(), None, _features_of_dataset(dataset))


def is_saved_dataset(folder: Path) -> bool:
    """A ``datasets`` ``save_to_disk`` folder: a DatasetDict (``dataset_dict.json``) or one Dataset."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def read_saved_dataset(folder: Path) -> Table:
    """One ``save_to_disk`` Dataset folder: through ``datasets`` where installed, else its Arrow files."""
    datasets = _datasets_module()
    if datasets is not None:
        try:
            return _dataset_table(datasets.load_from_disk(str(folder)), str(folder))
        except Exception as exc:
            raise _fail(str(folder), f"cannot be read by datasets.load_from_disk ({_short_reason(exc)})") from None
    import pyarrow as pa

    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
        tables = []
        for path in files:
            with pa.OSFile(str(path), "rb") as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        info_path = folder / "dataset_info.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except Exception as exc:    # missing/garbled state.json, Arrow files cut off
        raise _fail(str(folder), f"is not a readable save_to_disk folder ({_short_reason(exc)})") from None
    return _arrow_table(table, str(folder), info.get("features"))


def _hub_load(data_input: DataInput):
    datasets = _datasets_module()
    try:
        return datasets.load_dataset(data_input.path, data_input.hf_config, split=data_input.split)
    except Exception as exc:
        raise _fail(data_input.where, f"could not be loaded ({_short_reason(exc)})") from None


def read_input(data_input: DataInput, config: FileTaskConfig) -> Table:
    """The rows of one input."""
    if data_input.kind == "hub":
        return _dataset_table(_hub_load(data_input), data_input.where)
    path = Path(data_input.path)
    if data_input.kind == "disk":
        return read_saved_dataset(path)
    if not path.is_file():
        raise _fail(str(path), "not found")
    fmt = data_input.format
    if fmt in ("csv", "tsv"):
        return read_delimited(path, fmt, config)
    if fmt == "jsonl":
        return read_jsonl(path, config)
    if fmt == "json":
        return read_json(path, config)
    return read_parquet(path)


# ----------------------------------------------------------------------------------------------- locating


def _strip_compression(path: Path) -> tuple[str, str]:
    """(stem, extension) of a file name, ``.gz`` set aside: ``train.csv.gz`` -> ("train", ".csv")."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    dot = name.rfind(".")
    return (name, "") if dot <= 0 else (name[:dot], name[dot:].lower())


def sniff_format(path: Path, config: FileTaskConfig) -> str:
    """A file's format: ``format`` if given, else its extension, else its content."""
    if config.format not in ("auto", "hf"):
        return config.format
    _, extension = _strip_compression(path)
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError as exc:
        raise _fail(str(path), f"cannot be read: {_short_reason(exc)}") from None
    if head.startswith(b"PAR1"):
        return "parquet"
    if path.name.endswith(".gz"):
        head = b""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        return "jsonl"
    if text.startswith("["):
        return "json"
    first = text.split("\n", 1)[0]
    counts = {"tsv": first.count("\t"), "csv": first.count(",")}
    if max(counts.values()) > 0:
        return max(counts, key=counts.get)
    raise _fail(str(path), "cannot tell its format from its name or content: give format: csv, tsv, jsonl, "
                           "json or parquet")


_SHARD = re.compile(r"^(?P<split>[A-Za-z]+)(?:[-_.]\d+(?:-of-\d+)?)?$")


def split_of_file(path: Path) -> str | None:
    """The split a file's name means (``dev.tsv`` -> validation, ``train-00000-of-00002.parquet`` -> train)."""
    stem, _ = _strip_compression(path)
    match = _SHARD.match(stem)
    return SPLIT_ALIASES.get(match.group("split").lower()) if match else None


def _split_files(folder: Path, config: FileTaskConfig) -> dict[str, list[DataInput]]:
    """Split name -> its files in ``folder`` (or its ``data/``); a split in two formats is an error."""
    for candidate in (folder, folder / "data"):
        if not candidate.is_dir():
            continue
        found: dict[str, dict[str, list[Path]]] = {}
        for path in sorted(p for p in candidate.iterdir() if p.is_file()):
            split = split_of_file(path)
            _, extension = _strip_compression(path)
            if split is None or (config.format in ("auto", "hf") and extension not in EXTENSIONS):
                continue
            found.setdefault(split, {}).setdefault(sniff_format(path, config), []).append(path)
        if found:
            inputs = {}
            for split, by_format in found.items():
                if len(by_format) > 1:
                    files = ", ".join(p.name for paths in by_format.values() for p in paths)
                    raise _fail(str(candidate), f"holds the {split} split in {len(by_format)} formats ({files}): "
                                                "keep one, or name the files in a data: mapping")
                (fmt, paths), = by_format.items()
                inputs[split] = [DataInput("file", str(p), fmt) for p in paths]
            return inputs
    names = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    raise _fail(str(folder), "holds no split files: expected files named like train.csv, validation.jsonl, "
                             f"dev.tsv, test.parquet (found: {', '.join(names) or 'nothing'})")


def _saved_dataset_inputs(folder: Path) -> dict[str, list[DataInput]]:
    """The splits of a ``save_to_disk`` folder: a DatasetDict's by name (dev -> validation), one Dataset as train."""
    if not (folder / "dataset_dict.json").is_file():
        return {"train": [DataInput("disk", str(folder), "hf")]}
    try:
        names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise _fail(str(folder / "dataset_dict.json"), f"is not a DatasetDict index ({_short_reason(exc)})") from None
    inputs: dict[str, list[DataInput]] = {}
    for name in names:
        split = SPLIT_ALIASES.get(str(name).lower())
        if split is not None:
            if split in inputs:
                raise _fail(str(folder), f"has two splits that mean {split}: keep one")
            inputs[split] = [DataInput("disk", str(folder / name), "hf")]
    if not inputs:
        raise _fail(str(folder), f"has splits {', '.join(map(str, names))}, none of them train/validation/test")
    return inputs


def _hub_inputs(repo: str, config: FileTaskConfig) -> dict[str, list[DataInput]]:
    """A hub dataset's splits: through ``datasets`` where installed, else its data files fetched."""
    datasets = _datasets_module()
    label = f"Hugging Face dataset {repo}" + (f" ({config.hf_config})" if config.hf_config else "")
    if datasets is not None:
        try:
            names = datasets.get_dataset_split_names(repo, config.hf_config)
        except Exception as exc:
            raise UsageError(f"{label} could not be loaded ({_short_reason(exc)}); if it is a local path, it "
                             "does not exist") from None
        inputs = {}
        for name in names:
            split = SPLIT_ALIASES.get(str(name).lower())
            if split is not None and split not in inputs:
                inputs[split] = [DataInput("hub", repo, "hf", str(name), config.hf_config)]
        if not inputs:
            raise UsageError(f"{label} has splits {', '.join(names)}, none of them train/validation/test")
        return inputs
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=repo, repo_type="dataset", allow_patterns=HUB_DATA_PATTERNS))
    except Exception as exc:
        raise UsageError(f"{label} could not be fetched ({_short_reason(exc)}); if it is a local path, it does "
                         "not exist; installing the datasets package reads more hub datasets") from None
    for candidate in ([folder / config.hf_config] if config.hf_config else []) + [folder]:
        if candidate.is_dir():
            try:
                return _split_files(candidate, config)
            except UsageError:
                continue
    raise UsageError(f"{label}: its files hold no train/validation/test split files"
                     + (f" under {config.hf_config}/" if config.hf_config else ""))


def _file_input(path: Path, config: FileTaskConfig, role: str) -> DataInput:
    if path.is_dir():
        if (path / "state.json").is_file():
            return DataInput("disk", str(path), "hf")
        raise _fail(str(path), f"({role}) is a folder; give a file here, or the folder itself as data:")
    if not path.is_file():
        raise _fail(str(path), f"({role}) not found")
    return DataInput("file", str(path), sniff_format(path, config))


def locate_inputs(config: FileTaskConfig, base_dir: Path) -> dict[str, list[DataInput]]:
    """Split -> the inputs holding its rows, in order, as ``data`` names them."""
    base_dir = Path(base_dir)
    if isinstance(config.data, dict):
        located = {}
        for split, paths in config.data.items():
            paths = [paths] if isinstance(paths, str) else paths
            located[split] = [_file_input((base_dir / Path(p).expanduser()).resolve(), config, f"data.{split}")
                              for p in paths]
        return located
    data = config.data.strip()
    if data.startswith(HUB_PREFIX):
        return _hub_inputs(data[len(HUB_PREFIX):], config)
    path = (base_dir / Path(data).expanduser()).resolve()
    if path.is_dir():
        return _saved_dataset_inputs(path) if is_saved_dataset(path) else _split_files(path, config)
    if path.is_file():
        return {"train": [_file_input(path, config, "data")]}
    _, extension = _strip_compression(Path(data))
    if config.format == "hf" or (extension not in EXTENSIONS and HUB_ID_PATTERN.match(data)):
        return _hub_inputs(data, config)
    raise UsageError(f"data {data!r}: {path} not found (relative paths start at the suite's folder {base_dir})")


# ----------------------------------------------------------------------------------------------- labels


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names_list(names: Iterable[str], limit: int = 20) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float | None:
    """A label as a finite number, or None where it is not one."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _class_key(value: Any) -> str:
    """The text a class label is matched by: whole numbers as ``"3"`` (from 3, 3.0 or "3"), booleans as
    ``"true"``/``"false"``, text stripped."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    number = _number(value)
    if number is not None and number.is_integer():
        return str(int(number))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value).strip()


def _sorted_classes(keys: Iterable[str]) -> list[str]:
    """Distinct class keys, numerically where they are all numbers, else as text."""
    keys = set(keys)
    numbers = {key: _number(key) for key in keys}
    if keys and all(n is not None for n in numbers.values()):
        return sorted(keys, key=lambda key: numbers[key])
    return sorted(keys)


@dataclass(frozen=True)
class LabelPlan:
    """A task's kind and label mapping: ``names`` in id order (None for regression), where they come from (in words,
    and as ``TaskSpec.labels_from``), and the ClassLabel names (if any) that turn the label column's ids into names
    first."""

    kind: str
    names: tuple[str, ...] | None
    origin: str
    class_names: tuple[str, ...] | None = None
    labels_from: str = "list"

    @property
    def ids(self) -> dict[str, int]:
        return {_class_key(name): index for index, name in enumerate(self.names or ())}


def _class_names(tables: dict[str, list[Table]], column: str) -> tuple[str, tuple[str, ...]] | None:
    """The label column's ClassLabel (kind, names) from whichever input has features; differing ones are an error."""
    found: tuple[str, tuple[str, ...]] | None = None
    where = ""
    for split_tables in tables.values():
        for table in split_tables:
            if column in table.class_names:
                kind, names = table.class_names[column]
                if found is not None and found != (kind, tuple(names)):
                    raise _fail(table.where, f"column {column!r} has ClassLabel names {_names_list(names)}, but "
                                             f"{where} has {_names_list(found[1])}")
                found, where = (kind, tuple(names)), table.where
    return found


def _raw_tags(value: Any, separator: str | None) -> list | None:
    """A multi-label row's labels as a list, or None where the label is missing."""
    if _is_missing(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if separator is not None:
            return [part.strip() for part in text.split(separator) if part.strip()]
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [text] if text else []
    return [value]


def _check_column(tables: list[Table], column: str, role: str) -> None:
    for table in tables:
        if column not in table.columns:
            hint = (" (one column: is the delimiter right? set delimiter: or format:)"
                    if len(table.columns) == 1 else "")
            raise _fail(table.where, f"has no column {column!r} (the task's {role}); its columns: "
                                     f"{_names_list(map(str, table.columns), 40)}{hint}")


def plan_labels(config: FileTaskConfig, tables: dict[str, list[Table]], head: Sequence[str] | None = None) -> LabelPlan:
    """The kind and label mapping, from ``labels:`` / the ClassLabel names / the train split's labels; with ``head``
    (a given model's labels in output order) a ``labels:`` mapping, and labels from the data that are the model's
    own, in the model's order."""
    plan = _planned_labels(config, tables)
    if head is None or plan.names is None:
        return plan
    if plan.labels_from == "mapping":
        return replace(plan, names=_in_head_order(config.labels, tuple(map(str, head))))
    folded = [name.casefold() for name in plan.names]
    if plan.labels_from == "data" and sorted(folded) == sorted(str(name).casefold() for name in head):
        return replace(plan, names=tuple(plan.names[folded.index(str(name).casefold())] for name in head),
                       origin=f"{plan.origin}, in the order of the model's outputs")
    return plan


def _in_head_order(mapping: dict, head: tuple[str, ...]) -> tuple[str, ...]:
    """The keys of a ``labels:`` mapping ordered by the model labels they map to (``head``, the output order);
    a mapping that does not name each output once is a usage error whose advice is a mapping that does."""
    labels, meant = [str(key) for key in mapping], [str(value) for value in mapping.values()]
    folded = [name.casefold() for name in head]
    if len(labels) > len(head):
        raise UsageError(f"labels maps {len(labels)} labels, but the model has {len(head)} outputs "
                         f"({', '.join(head)}): fine-tune a head for them (teacher: {{finetune: true}}) with labels: "
                         f"{labels_yaml(labels)}")
    unknown = [(label, value) for label, value in zip(labels, meant) if value.casefold() not in folded]
    unnamed = [name for name in head if name.casefold() not in {value.casefold() for value in meant}]
    if unknown or unnamed:
        problem = (f"labels maps {unknown[0][0]} to {unknown[0][1]!r}, which is not one of the model's labels"
                   if unknown else f"labels maps none of yours to the model's {', '.join(unnamed)}")
        raise UsageError(f"{problem} ({', '.join(head)}); map each output once, e.g. labels: "
                         f"{labels_yaml(suggested_reading(labels, head, meant))} (if that is what they mean)")
    by_meaning = {value.casefold(): label for label, value in zip(labels, meant)}
    return tuple(by_meaning[name] for name in folded)


def suggested_reading(labels: Sequence[str], head: Sequence[str], meant: Sequence[str] | None = None) -> dict:
    """A guess, for advice, at which of the model's labels (``head``) each of ``labels`` is: the same name first,
    then the closest to what ``meant`` (the user's mapping) says, then in order; a model label left over is named
    after itself. Every output is named once (at most ``len(head)`` labels)."""
    left = list(head)

    def take(name: str) -> str:
        left.remove(name)
        return name

    reading: dict = {}
    for label in labels:          # the same name
        same = next((name for name in left if name.casefold() == str(label).casefold()), None)
        if same is not None:
            reading[label] = take(same)
    for index, label in enumerate(labels):
        if label not in reading and left:
            hint = meant[index] if meant is not None else str(label)
            close = difflib.get_close_matches(hint, left, n=1) or left[:1]
            reading[label] = take(close[0])
    reading.update({name: name for name in left if name not in reading})
    return {label: reading[label] for label in [*labels, *[name for name in reading if name not in labels]]}


def labels_yaml(labels: Sequence[str] | dict) -> str:
    """``labels:`` as a suite writes it: ``[a, b]`` or ``{a: x, b: y}``."""
    if isinstance(labels, dict):
        return "{" + ", ".join(f"{key}: {value}" for key, value in labels.items()) + "}"
    return "[" + ", ".join(map(str, labels)) + "]"


def _planned_labels(config: FileTaskConfig, tables: dict[str, list[Table]]) -> LabelPlan:
    """``plan_labels`` before a given model's order is known."""
    train = tables["train"]
    if isinstance(config.label, list):
        return LabelPlan("multi_label", tuple(config.label), "the label columns")
    column = config.label
    features = _class_names(tables, column)
    given = tuple(str(value) for value in config.labels) if config.labels is not None else None
    given_from = "mapping" if isinstance(config.labels, dict) else "list"
    values = [v for table in train for v in table.columns[column] if not _is_missing(v)]
    problem = config.problem
    if features is not None:
        feature_kind, class_names = features
        kind = "single_label" if feature_kind == "class" else "multi_label"
        if problem not in ("auto", kind):
            what = "ClassLabel" if kind == "single_label" else "list of ClassLabel"
            raise _fail(train[0].where, f"column {column!r} is a Hugging Face {what} ({_names_list(class_names)}), "
                                        f"which makes a {kind} task, not {problem}")
        if given is not None:
            return LabelPlan(kind, given, "given as labels:", class_names, given_from)
        return LabelPlan(kind, class_names, "the dataset's ClassLabel names", class_names, "data")
    if problem == "auto":
        problem = _infer_problem(config, values, train[0].where, column)
    if problem == "regression":
        return LabelPlan("regression", None, "")
    if given is not None:
        return LabelPlan(problem, given, "given as labels:", labels_from=given_from)
    if problem == "multi_label":
        keys = []
        for table in train:
            for index, value in enumerate(table.columns[column]):
                tags = _raw_tags(value, config.label_separator)
                keys += [_tag_key(tag, table, index, column) for tag in tags or ()]
        names = _sorted_classes(keys)
    else:
        names = _sorted_classes(_class_key(v) for v in values if not (isinstance(v, str) and not v.strip()))
    where = ", ".join(t.where for t in train)
    if len(names) < 2:
        raise _fail(where, f"column {column!r} holds {len(names)} distinct label(s) in the train split "
                           f"({_names_list(names) or 'none'}): a classifier needs two or more; list them all in "
                           "labels:")
    return LabelPlan(problem, tuple(names), "inferred from the train split; list every label in labels: to "
                                            "allow others", labels_from="data")


def _infer_problem(config: FileTaskConfig, values: list, where: str, column: str) -> str:
    """``problem: auto``: see the module docstring."""
    if config.label_separator is not None or any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        return "multi_label"
    if config.labels is not None:
        return "single_label"
    values = [v for v in values if not (isinstance(v, str) and not v.strip())]
    numbers = [_number(v) for v in values]
    if not values or any(n is None for n in numbers):
        return "single_label"
    if not all(n.is_integer() for n in numbers):
        return "regression"
    distinct = sorted(set(numbers))
    if len(distinct) > MAX_INFERRED_INTEGER_CLASSES:
        raise _fail(where, f"column {column!r} holds {len(distinct)} distinct whole numbers "
                           f"({int(distinct[0])} to {int(distinct[-1])}): classes or a score? give problem: "
                           "single_label or problem: regression")
    return "single_label"


def _tag_key(tag: Any, table: Table, index: int, column: str) -> str:
    if isinstance(tag, (list, tuple, dict, np.ndarray)) or _is_missing(tag):
        raise _fail(table.at(index), f"column {column!r}: a multi-label row's labels must be names or numbers, "
                                     f"got {_show(tag)}")
    return _class_key(tag)


# ----------------------------------------------------------------------------------------------- rows


@dataclass
class SplitRows:
    """One split's rows as compbench reads them, and what was dropped from it, by reason."""

    frame: pd.DataFrame
    dropped: Counter


def _text_value(value: Any, table: Table, index: int, column: str) -> str | None:
    """The text, or None where it is missing or blank (the row is dropped)."""
    if _is_missing(value):
        return None
    if not isinstance(value, str):
        raise _fail(table.at(index), f"column {column!r} holds {type(value).__name__} {_show(value)}, not text")
    return value if value.strip() else None


class _Labeller:
    """Turns raw label values into what the task's frames hold; errors name the row and what is valid."""

    def __init__(self, config: FileTaskConfig, plan: LabelPlan, task: str) -> None:
        self.config, self.plan, self.task = config, plan, task
        self.ids = plan.ids

    def _valid(self) -> str:
        return f"task {self.task}'s labels are {_names_list(self.plan.names or ())} ({self.plan.origin})"

    def _from_class_id(self, value: Any, table: Table, index: int, column: str) -> Any:
        """A ClassLabel id as its name; None for -1 (no label)."""
        names = self.plan.class_names
        number = _number(value)
        if number is None or not number.is_integer() or not -1 <= number < len(names):
            raise _fail(table.at(index), f"column {column!r} holds {_show(value)}, not a ClassLabel id 0.."
                                         f"{len(names) - 1} ({_names_list(names)}) or -1")
        return None if number == -1 else names[int(number)]

    def _class_id(self, value: Any, table: Table, index: int, column: str) -> int:
        key = _class_key(value)
        if key not in self.ids:
            hint = " (-1 often marks a hidden label, as in GLUE test splits)" if key == "-1" else ""
            raise _fail(table.at(index), f"label {_show(value)} in column {column!r} is not one of the labels: "
                                         f"{self._valid()}{hint}")
        return self.ids[key]

    def value(self, table: Table, index: int) -> Any:
        """The row's label (int id, float, or multi-hot tuple), or None where it is missing."""
        kind, config = self.plan.kind, self.config
        if isinstance(config.label, list):
            return self._from_columns(table, index)
        column = config.label
        raw = table.columns[column][index]
        if kind == "regression":
            if _is_missing(raw) or (isinstance(raw, str) and not raw.strip()):
                return None
            number = _number(raw)
            if number is None:
                if isinstance(raw, str) and raw.strip().lower() in ("nan", "null", "none", "na", "n/a"):
                    return None
                raise _fail(table.at(index), f"label {_show(raw)} in column {column!r} is not a number (task "
                                             f"{self.task} is regression: labels are finite numbers)")
            return number
        if kind == "single_label":
            if isinstance(raw, (list, tuple, np.ndarray)):
                raise _fail(table.at(index), f"label {_show(raw)} in column {column!r} is a list, but task "
                                             f"{self.task} is single-label: set problem: multi_label")
            if self.plan.class_names is not None and not isinstance(raw, str):
                raw = self._from_class_id(raw, table, index, column) if not _is_missing(raw) else None
            if _is_missing(raw) or (isinstance(raw, str) and not raw.strip()):
                return None
            return self._class_id(raw, table, index, column)
        tags = _raw_tags(raw, config.label_separator)
        if tags is None:
            return None
        hot = [0] * len(self.plan.names)
        for tag in tags:
            if self.plan.class_names is not None and not isinstance(tag, str):
                tag = self._from_class_id(tag, table, index, column)
                if tag is None:
                    continue
            hot[self._class_id(_tag_key(tag, table, index, column), table, index, column)] = 1
        return tuple(hot)

    def _from_columns(self, table: Table, index: int) -> tuple[int, ...] | None:
        hot = []
        for column in self.config.label:
            raw = table.columns[column][index]
            if _is_missing(raw) or (isinstance(raw, str) and not raw.strip()):
                return None
            key = _class_key(raw).lower()
            if key not in ("0", "1", "true", "false"):
                raise _fail(table.at(index), f"label column {column!r} holds {_show(raw)}; each label column holds "
                                             "0/1 (or true/false)")
            hot.append(1 if key in ("1", "true") else 0)
        return tuple(hot)


def build_rows(config: FileTaskConfig, plan: LabelPlan, spec_name: str, text_fields: tuple[str, ...],
               tables: list[Table]) -> SplitRows:
    """One split's frame from its tables: texts checked, labels converted, incomplete rows dropped and counted."""
    labeller = _Labeller(config, plan, spec_name)
    columns: dict[str, list] = {name: [] for name in (*text_fields, "label")}
    dropped: Counter = Counter()
    for table in tables:
        for index in range(len(table)):
            texts = [_text_value(table.columns[name][index], table, index, name) for name in text_fields]
            blank = next((name for name, text in zip(text_fields, texts) if text is None), None)
            label = labeller.value(table, index)       # checked even on rows dropped for their text
            if blank is not None:
                dropped[f"missing or blank text in column {blank!r}"] += 1
                continue
            if label is None:
                dropped[f"missing label in column {config.label!r}"] += 1
                continue
            for name, text in zip(text_fields, texts):
                columns[name].append(text)
            columns["label"].append(label)
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype="str") for name in text_fields})
    if plan.kind == "regression":
        frame["label"] = np.asarray(columns["label"], dtype=np.float64)
    elif plan.kind == "single_label":
        frame["label"] = np.asarray(columns["label"], dtype=np.int64)
    else:
        frame["label"] = pd.Series(columns["label"], dtype=object)
    return SplitRows(frame, dropped)


def carve_validation(rows: SplitRows, fraction: float, seed: int, where: str) -> tuple[SplitRows, SplitRows]:
    """(train, validation): a seeded ``fraction`` of the train rows (at least one, never all), both in file order.
    Rows dropped from the train file stay counted under train."""
    n = len(rows.frame)
    if n < 2:
        raise _fail(where, f"has {n} usable row(s): too few to carve a validation split from")
    count = min(max(int(round(n * fraction)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    validation, train = np.sort(order[:count]), np.sort(order[count:])
    take = lambda index: rows.frame.iloc[index].reset_index(drop=True)  # noqa: E731
    return SplitRows(take(train), rows.dropped), SplitRows(take(validation), Counter())


# ----------------------------------------------------------------------------------------------- source


class FileTaskSource(DataSource):
    """The rows of one file task (see :func:`resolve_file_task`): every split read, checked and converted once
    per process, then served as copies."""

    kind = "task files"

    def __init__(self, config: FileTaskConfig, base_dir: Path, seed: int, spec: TaskSpec, plan: LabelPlan,
                 inputs: dict[str, list[DataInput]], place: str) -> None:
        super().__init__(place)
        self.config, self.base_dir, self.seed = config, Path(base_dir), seed
        self.spec, self.plan, self.inputs = spec, plan, inputs
        self._tables: dict[DataInput, Table] = {}
        self._rows: dict[str, SplitRows] = {}

    @property
    def carved(self) -> bool:
        """Whether the validation split is carved from train."""
        return "validation" not in self.inputs and self.config.validation_fraction is not None

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this task has."""
        return tuple(s for s in SPLITS if s in self.inputs or (s == "validation" and self.carved))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tables"], state["_rows"] = {}, {}    # read again where unpickled
        return state

    def tables(self, split: str) -> list[Table]:
        out = []
        for data_input in self.inputs[split]:
            if data_input not in self._tables:
                self._tables[data_input] = read_input(data_input, self.config)
            out.append(self._tables[data_input])
        return out

    def rows(self, split: str) -> SplitRows:
        """One split's rows, built on first use; a split without usable rows is an error."""
        if split in self._rows:
            return self._rows[split]
        if split not in self.splits:
            raise UsageError(f"task {self.spec.name} has no {split} split in {self.place} (it has "
                             f"{', '.join(self.splits)})")
        if self.carved and split in ("train", "validation"):
            where = ", ".join(i.where for i in self.inputs["train"])
            whole = self._build("train", where)
            self._rows["train"], self._rows["validation"] = carve_validation(
                whole, self.config.validation_fraction, self.seed, where)
        else:
            where = ", ".join(i.where for i in self.inputs[split])
            self._rows[split] = self._build(split, where)
        for data_input in self.inputs.get(split, []):
            self._tables.pop(data_input, None)        # the frame is what is kept
        return self._rows[split]

    def _build(self, split: str, where: str) -> SplitRows:
        tables = self.tables(split)
        for column, role in _columns_needed(self.config):
            _check_column(tables, column, role)
        rows = build_rows(self.config, self.plan, self.spec.name, self.spec.text_fields, tables)
        if rows.frame.empty:
            read = sum(len(t) for t in tables)
            reasons = "; ".join(f"{count} with {reason}" for reason, count in rows.dropped.items())
            raise _fail(where, f"the {split} split has no usable rows ({read} read" + (f": {reasons}" if reasons
                                                                                      else "") + ")")
        return rows

    def load_split(self, task: TaskSpec, split: str) -> pd.DataFrame:
        """The split's rows (``task.text_fields`` + ``label``), with what was dropped in the frame's attrs."""
        if task.name != self.spec.name:
            raise UsageError(f"the data of task {self.spec.name} was asked for task {task.name}")
        rows = self.rows(split)
        frame = rows.frame.copy()
        frame.attrs = {MALFORMED_LINES_ATTR: int(sum(rows.dropped.values())), DROP_REASONS_ATTR: dict(rows.dropped)}
        return frame


def _columns_needed(config: FileTaskConfig) -> list[tuple[str, str]]:
    needed = [(config.text, "text")]
    if config.text_pair is not None:
        needed.append((config.text_pair, "text_pair"))
    labels = config.label if isinstance(config.label, list) else [config.label]
    return needed + [(column, "label") for column in labels]


def _place(config: FileTaskConfig, base_dir: Path, inputs: dict[str, list[DataInput]]) -> str:
    """Where the task's rows come from, for messages and rows: the data path (or id), or split=file pairs."""
    if isinstance(config.data, str):
        data = config.data.strip()
        path = (Path(base_dir) / Path(data).expanduser()).resolve()
        return str(path) if path.exists() else data
    return ", ".join(f"{split}={'+'.join(i.where for i in split_inputs)}" for split, split_inputs in inputs.items())


def _check_splits(config: FileTaskConfig, inputs: dict[str, list[DataInput]], where: str) -> None:
    if "train" not in inputs:
        raise _fail(where, f"has no train split (found: {', '.join(inputs) or 'none'})")
    fraction = config.validation_fraction
    if "validation" in inputs and fraction is not None:
        raise _fail(where, "has a validation split, and validation_fraction would carve another from train: "
                           "drop validation_fraction, or the validation split")
    if config.eval_split == "test":
        if "test" not in inputs:
            raise _fail(where, f"has no test split to evaluate on (found: {', '.join(inputs)})")
        if fraction is not None:
            raise _fail(where, "validation_fraction carves a validation split, but eval_split is test: drop it")
    elif "validation" not in inputs and fraction is None:
        raise _fail(where, f"has no validation split (found: {', '.join(inputs)}): give validation_fraction "
                           "(e.g. 0.1) to carve one from train, a validation file, or eval_split: test")


def _metric_names(config: FileTaskConfig, plan: LabelPlan) -> tuple[str, ...]:
    num_labels = len(plan.names) if plan.names else 1
    if config.metric is None:
        return default_metrics(plan.kind, num_labels)
    names = (config.metric,) if isinstance(config.metric, str) else tuple(config.metric)
    for name in names:
        problem = metric_problem(name, plan.kind, num_labels)
        if problem:
            raise UsageError(f"task {config.name}: {problem}")
    return names


def resolve_file_task(config: FileTaskConfig, base_dir: Path, seed: int = 0,
                      head: Sequence[str] | None = None) -> tuple[TaskSpec, FileTaskSource]:
    """The spec and the source of a file task: its inputs located (relative paths from ``base_dir``, the suite's
    folder), the train and evaluation splits read and checked, the kind and label mapping settled (``head``: a
    given model's labels in output order, ``plan_labels``). ``seed`` (the suite's data seed) carves
    ``validation_fraction``. Every problem is a one-line UsageError."""
    try:
        inputs = locate_inputs(config, base_dir)
        place = _place(config, base_dir, inputs)
        _check_splits(config, inputs, place)
        used = ["train", config.eval_split]
        source = FileTaskSource(config, base_dir, seed, spec=None, plan=None, inputs=inputs, place=place)
        tables = {split: source.tables(split) for split in dict.fromkeys(used) if split in inputs}
        for split, split_tables in tables.items():
            for column, role in _columns_needed(config):
                _check_column(split_tables, column, role)
            if not any(len(table) for table in split_tables):
                raise _fail(", ".join(t.where for t in split_tables), f"the {split} split has no usable rows (0 read)")
        plan = plan_labels(config, tables, head)
        text_fields = (config.text,) + ((config.text_pair,) if config.text_pair is not None else ())
        num_labels = len(plan.names) if plan.names else 1
        spec = TaskSpec(config.name, text_fields, num_labels, _metric_names(config, plan), (config.eval_split,),
                        None, plan.kind, plan.names, plan.labels_from if plan.names else "")
        source.spec, source.plan = spec, plan
        for split in dict.fromkeys(used):
            source.rows(split)
    except UsageError as exc:
        message = str(exc)
        raise UsageError(message if message.startswith(f"task {config.name}") else
                         f"task {config.name}: {message}") from None
    return spec, source


# ----------------------------------------------------------------------------------------------- plain columns


def read_split_columns(data: str, base_dir: Path, splits: Sequence[str], *, hf_config: str | None = None,
                       encoding: str = "utf-8", what: str = "data") -> tuple[str, dict[str, list], str]:
    """The columns of one split of ``data`` (any file, folder, ``save_to_disk`` folder or hub id a file task
    takes), for readers that need rows but no labels (a causal LM's corpus, a multiple-choice task).

    The split is the first of ``splits`` the data has; a single file is its only split whatever its name.
    Returns ``(split, columns, where)``; no such split is a one-line usage error naming the splits there are."""
    reading = FileTaskConfig.model_construct(name=what, data=data, text="", label="", hf_config=hf_config,
                                             encoding=encoding)
    inputs = locate_inputs(reading, base_dir)
    single = len(inputs) == 1 and all(i.kind != "hub" for found in inputs.values() for i in found)
    split = next((s for s in splits if s in inputs), next(iter(inputs)) if single else None)
    where = f"{what} {data!r}" + (f" ({hf_config})" if hf_config else "")
    if split is None:
        raise UsageError(f"{where} has no {' or '.join(splits)} split (it has {', '.join(inputs)})")
    tables = [read_input(data_input, reading) for data_input in inputs[split]]
    names = list(tables[0].columns)
    columns = {name: [value for table in tables for value in table.columns.get(name, [None] * len(table))]
               for name in names}
    return split, columns, f"{where} split {split}" if not single else where
