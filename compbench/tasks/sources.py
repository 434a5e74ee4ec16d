"""Where a task's rows come from: local folders or the Hugging Face hub.

Three data sources share one interface (:class:`DataSource`):

* :class:`ParquetFolderSource` -- the Hugging Face parquet layout ``<dir>/<task>/<split>.parquet``
  (or hub shards ``<split>-00000-of-00001.parquet``);
* :class:`GlueTsvFolderSource` -- the original GLUE download layout ``<dir>/SST-2/dev.tsv`` ...;
* :class:`HubSource` -- the hub dataset ``nyu-mll/glue``, downloaded into the local cache.

Every source returns the Hugging Face column names (``task.text_fields`` + ``label``), so the
rest of compbench never sees which layout the rows came from.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd

from compbench.common.errors import DataNotFoundError
from compbench.tasks.glue import TASKS, TSV_FORMATS, TSV_SPLIT_FILES, TaskSpec, TsvFormat

DATA_DIR_ENV = "COMPBENCH_DATA_DIR"
HUB_REPO_ID = "nyu-mll/glue"
HUB_KEYWORD = "hub"


# Key in ``DataFrame.attrs`` where a source records how many malformed lines (or incomplete rows) it skipped.
MALFORMED_LINES_ATTR = "compbench_malformed_lines"
# Key in ``DataFrame.attrs`` where a source may say why it skipped them: ``{reason: count}``.
DROP_REASONS_ATTR = "compbench_drop_reasons"


class DataSource(ABC):
    """Where a task's rows come from; ``description`` is used in messages and result rows."""

    kind: str = ""

    def __init__(self, place: str, *, origin: str | None = None) -> None:
        self.place = place
        self.origin = origin

    @property
    def description(self) -> str:
        """E.g. ``local parquet folder /x/glue (from COMPBENCH_DATA_DIR)``."""
        suffix = f" (from {self.origin})" if self.origin else ""
        return f"{self.kind} {self.place}{suffix}"

    @abstractmethod
    def load_split(self, task: TaskSpec, split: str) -> pd.DataFrame:
        """Rows of one split: ``task.text_fields`` + ``label`` (int64, or float64 for stsb).

        Rows without a label keep -1 (classification) or NaN (regression); the loader drops
        them. Raises DataNotFoundError naming the place(s) looked at.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class LocalFolderSource(DataSource):
    """A source reading files under a local folder."""

    def __init__(self, root: str | Path, *, origin: str | None = None) -> None:
        self.root = Path(root)
        super().__init__(str(self.root), origin=origin)

    @classmethod
    @abstractmethod
    def looks_like(cls, path: Path) -> bool:
        """Whether ``path`` holds data in this source's layout."""


def _finish_frame(task: TaskSpec, frame: pd.DataFrame, malformed_lines: int = 0) -> pd.DataFrame:
    """Keep the task's columns in order, with the label dtype fixed; record skipped lines."""
    out = frame.loc[:, [*task.text_fields, "label"]].reset_index(drop=True)
    if task.is_regression:
        out["label"] = pd.to_numeric(out["label"], errors="coerce").astype("float64")
    else:
        out["label"] = pd.to_numeric(out["label"], errors="coerce").fillna(-1).astype("int64")
    out.attrs[MALFORMED_LINES_ATTR] = malformed_lines
    return out


class ParquetFolderSource(LocalFolderSource):
    """``<dir>/<task>/<split>.parquet`` or hub shards ``<dir>/<task>/<split>-*.parquet``."""

    kind = "local parquet folder"

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        """A folder with at least one task-named subfolder holding parquet files."""
        return any(any((path / name).glob("*.parquet")) for name in TASKS)

    def split_files(self, task: TaskSpec, split: str) -> list[Path]:
        """The file(s) of one split: the single file if present, else the sorted shards."""
        folder = self.root / task.name
        single = folder / f"{split}.parquet"
        if single.is_file():
            return [single]
        return sorted(folder.glob(f"{split}-*.parquet"))

    def load_split(self, task: TaskSpec, split: str) -> pd.DataFrame:
        """Read and concatenate the split's parquet file(s)."""
        files = self.split_files(task, split)
        if not files:
            folder = self.root / task.name
            raise DataNotFoundError(
                f"no {task.name}/{split} data in {self.description}: looked for "
                f"{folder / (split + '.parquet')} and {folder / (split + '-*.parquet')}"
            )
        frame = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
        missing = [col for col in (*task.text_fields, "label") if col not in frame.columns]
        if missing:
            raise DataNotFoundError(
                f"{files[0]} lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(map(str, frame.columns))})"
            )
        return _finish_frame(task, frame)


def read_tsv_rows(path: Path, names: tuple[str, ...] | None) -> tuple[list[str], list[list[str]], int]:
    """Split a TSV file with quoting off: (header, rows, number of malformed lines skipped).

    Lines are split on ``\\n`` and tabs only, never on quotes; a line whose field count differs
    from the header's is skipped and counted rather than silently padded or merged.
    """
    text = path.read_text(encoding="utf-8-sig")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if names is None:
        if not lines:
            raise DataNotFoundError(f"{path} is empty (expected a header line)")
        header, lines = lines[0].split("\t"), lines[1:]
    else:
        header = list(names)
    rows = [fields for fields in (line.split("\t") for line in lines) if len(fields) == len(header)]
    return header, rows, len(lines) - len(rows)


def _tsv_labels(values: pd.Series, fmt: TsvFormat, regression: bool) -> pd.Series:
    """Convert string labels; unknown or empty ones become -1 (NaN for regression)."""
    if fmt.label_map is not None:
        return values.str.strip().map(fmt.label_map).fillna(-1).astype("int64")
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    return numbers.astype("float64") if regression else numbers.fillna(-1).astype("int64")


class GlueTsvFolderSource(LocalFolderSource):
    """The original GLUE layout: ``<dir>/<TSV_DIR>/{train,dev,dev_matched,...}.tsv``."""

    kind = "local GLUE TSV folder"

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        """A folder with at least one GLUE-named subfolder (SST-2, STS-B, ...) holding TSVs."""
        return any(any((path / spec.tsv_dir).glob("*.tsv")) for spec in TASKS.values())

    def split_file(self, task: TaskSpec, split: str) -> Path:
        """The TSV file holding ``split``; DataNotFoundError for a split with no TSV name."""
        if split not in TSV_SPLIT_FILES:
            raise DataNotFoundError(
                f"split {split!r} has no GLUE TSV file (known: {', '.join(TSV_SPLIT_FILES)})"
            )
        return self.root / task.tsv_dir / TSV_SPLIT_FILES[split]

    def load_split(self, task: TaskSpec, split: str) -> pd.DataFrame:
        """Read the split's TSV as strings with quoting off and map it to HF columns."""
        path = self.split_file(task, split)
        if not path.is_file():
            raise DataNotFoundError(f"no {task.name}/{split} data in {self.description}: {path} not found")
        fmt = TSV_FORMATS[task.name]
        header, rows, malformed = read_tsv_rows(path, fmt.names)
        needed = [*fmt.columns.values(), fmt.label_column]
        missing = [col for col in needed if col not in header]
        if missing:
            raise DataNotFoundError(
                f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(header)})"
            )
        raw = pd.DataFrame(rows, columns=header, dtype=str) if rows else pd.DataFrame(columns=header, dtype=str)
        frame = pd.DataFrame({hf: raw[tsv] for hf, tsv in fmt.columns.items()})
        frame["label"] = _tsv_labels(raw[fmt.label_column], fmt, task.is_regression)
        return _finish_frame(task, frame, malformed)


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """First line of an exception, prefixed with its type, cut to ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HubSource(DataSource):
    """The Hugging Face hub dataset ``nyu-mll/glue`` (parquet shards, cached locally)."""

    kind = "hub dataset"

    def __init__(self, repo_id: str = HUB_REPO_ID, *, origin: str | None = None) -> None:
        self.repo_id = repo_id
        super().__init__(repo_id, origin=origin)

    def download(self, task: TaskSpec, split: str) -> Path:
        """Fetch the split's shards into the hub cache; the local snapshot folder."""
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(
                repo_id=self.repo_id,
                repo_type="dataset",
                allow_patterns=[f"{task.name}/{split}-*.parquet"],
            )
        except Exception as exc:  # offline, unknown repo, missing package: all mean "no data"
            raise DataNotFoundError(
                f"could not fetch {self.repo_id}/{task.name}/{split} from the Hugging Face hub: "
                f"{_short_reason(exc)}; pass --data-dir or set {DATA_DIR_ENV} to a local GLUE folder"
            ) from exc
        return Path(folder)

    def load_split(self, task: TaskSpec, split: str) -> pd.DataFrame:
        """Download the split, then read it as a parquet folder."""
        folder = self.download(task, split)
        return ParquetFolderSource(folder, origin=f"hub snapshot of {self.repo_id}").load_split(task, split)


# Local layouts in order of preference for detect_layout.
LOCAL_LAYOUTS: tuple[type[LocalFolderSource], ...] = (ParquetFolderSource, GlueTsvFolderSource)


# Subfolders tried, in order, when pointed at a folder that holds both layouts.
PARENT_SUBFOLDERS: tuple[str, ...] = ("glue", "glue_tsv")


def detect_layout(path: Path, *, origin: str | None = None) -> DataSource:
    """The local source for ``path``: a parquet or GLUE TSV folder, or a parent of one.

    For a parent holding ``glue/`` and ``glue_tsv/``, ``glue/`` (parquet) wins.
    """
    path = Path(path)
    where = f"{path} (from {origin})" if origin else str(path)
    if not path.is_dir():
        raise DataNotFoundError(f"data folder {where} does not exist or is not a folder")
    for candidate in (path, *(path / name for name in PARENT_SUBFOLDERS)):
        for layout in LOCAL_LAYOUTS:
            if candidate.is_dir() and layout.looks_like(candidate):
                return layout(candidate, origin=origin)
    raise DataNotFoundError(
        f"data folder {where} matches no known layout: expected task folders with parquet files "
        f"(e.g. sst2/validation.parquet), original GLUE TSV folders (e.g. SST-2/dev.tsv), "
        f"or a parent folder holding {' or '.join(n + '/' for n in PARENT_SUBFOLDERS)}"
    )


def resolve_data_source(cli_dir: str | None, suite_dir: str | Path | None) -> DataSource:
    """Pick the data source: --data-dir, then $COMPBENCH_DATA_DIR, then the suite, then the hub.

    The first setting given wins, with no fallback: a named folder that is missing is an
    error, not a silent trip to the hub. Any setting may be the literal ``hub``. Empty strings
    count as not given.
    """
    settings = (
        ("--data-dir", cli_dir),
        (DATA_DIR_ENV, os.environ.get(DATA_DIR_ENV)),
        ("the suite's data.dir", suite_dir),
    )
    for origin, value in settings:
        if value is None or str(value).strip() == "":
            continue
        if str(value).strip() == HUB_KEYWORD:
            return HubSource(origin=origin)
        return detect_layout(Path(value).expanduser().resolve(), origin=origin)
    return HubSource(origin="default: no data folder given")
