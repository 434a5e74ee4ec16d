"""A suite's causal-LM task: a mapping in ``tasks:`` with a ``corpus``, e.g.

```yaml
tasks:
  - name: glue-text
    corpus: glue                 # offline: the RTE and MRPC sentences of the data folder
    window: 512                  # tokens per perplexity window; stride: window (no overlap) unless given
    zero_shot:
      - task: sst2               # a GLUE task, scored lm-eval style on its validation rows
        template: "Review: {sentence}\\nSentiment:"
        choices: [" negative", " positive"]
      - name: hellaswag          # multiple choice from rows of your own: prompt + " " + each answer is scored
        data: hf:Rowan/hellaswag
        template: "{ctx}"
        choices_column: endings
```

The headline metric is the corpus perplexity (token-weighted, lower is better; ``tasks.language_modeling``),
then each zero-shot task's accuracy as ``zero_shot_<task>``. The rows a cell sees (``TaskData``): ``train`` is the
text compressors calibrate and train on (``corpus: glue``: the train split's sentences; a file corpus: its
``train_corpus``), ``eval["validation"]`` the documents perplexity scores, ``eval["zero-shot/<task>"]`` each
zero-shot task's labelled rows. ``--limit-eval`` takes a seeded subset of the documents and of each zero-shot
task's rows (kept in their order), ``--limit-train`` of the training documents.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compbench.common.errors import UsageError
from compbench.common.fields import MAX_ROWS, bounded_int
from compbench.common.hashing import stable_hash
from compbench.tasks.data import TaskData, fingerprint
from compbench.tasks.files import read_split_columns
from compbench.tasks.glue import TASKS, TaskSpec, get_task
from compbench.tasks.language_modeling import CORPUS_FORMATS, Corpus, glue_corpus, load_corpus, render_prompts
from compbench.tasks.sources import DataSource

GLUE_CORPUS = "glue"
PERPLEXITY = "perplexity"
ZERO_SHOT_SPLIT = "zero-shot/"           # eval split name prefix of a zero-shot task's rows
CHOICES_COLUMN = "choices"               # a data zero-shot task's rows: each row's answers, filled in
EVAL_SPLITS = ("validation", "test")     # the split of a corpus or zero-shot dataset scored, unless named
MAX_WINDOW = 1 << 17


class ZeroShotConfig(BaseModel):
    """A task scored lm-eval style, by comparing the log-likelihood of each choice after a prompt: a GLUE
    classification task (``task``: one label word per label), or rows of the user's own (``data``: a file, folder
    or Hugging Face dataset, as a file task takes) with the choices per row (``choices`` filled from the row, or a
    list-valued ``choices_column``) and the correct one's index (or text) in ``label``: multiple choice."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(None, description="a GLUE classification task whose validation rows are scored")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
                             description="with data: the task's name in rows and reports (zero_shot_<name>)")
    data: str | None = Field(None, description="a file, split folder, save_to_disk folder or Hugging Face dataset "
                                               "(relative to the suite) whose rows are scored")
    hf_config: str | None = Field(None, description="with data: a Hugging Face dataset's configuration")
    split: str | None = Field(None, description="with data: the split scored (default validation, else test)")
    template: str = Field(description="the prompt: Python format fields name the row's columns")
    choices: list[str] | None = Field(None, min_length=2, description="one continuation per label (task), or per "
                                      "answer (data: format fields are filled from the row)")
    choices_column: str | None = Field(None, description="with data: a column holding each row's list of answers")
    label: str = Field("label", description="with data: the column of the correct answer (its index, or its text)")
    target_delimiter: str | None = Field(None, description="the text between the prompt and each choice, as "
                                         "lm-eval-harness's target_delimiter: prompt + delimiter + choice is scored "
                                         "(default: ' ' with data:, lm-eval's default; '' for a GLUE task, whose "
                                         "choices carry their own leading space)")
    limit: bounded_int(1, MAX_ROWS) | None = Field(None, description="seeded subset of the rows (default: all)")

    @field_validator("task")
    @classmethod
    def _classification_task(cls, name: str | None) -> str | None:
        task = get_task(name) if name in TASKS else None
        if name is not None and (task is None or task.kind != "single_label"):
            classes = ", ".join(n for n, t in TASKS.items() if t.kind == "single_label")
            raise ValueError(f"zero-shot task {name!r}: give a GLUE classification task ({classes}), or data: and "
                             "name: for rows of your own")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> "ZeroShotConfig":
        if (self.task is None) == (self.data is None):
            raise ValueError("give either task: (a GLUE classification task) or data: (rows of your own), not "
                             + ("both" if self.task else "neither"))
        if self.task is not None:
            return self._glue_consistent()
        if self.name is None:
            raise ValueError(f"data {self.data!r}: give the task a name: (it names the zero_shot_<name> metric)")
        if self.name in TASKS:
            raise ValueError(f"zero-shot name {self.name!r} is a GLUE task; give your task another name")
        if (self.choices is None) == (self.choices_column is None):
            raise ValueError("give either choices: (a list, filled from each row) or choices_column: (a column of "
                             "answer lists), not " + ("both" if self.choices else "neither"))
        return self

    def _glue_consistent(self) -> "ZeroShotConfig":
        stray = [f for f in ("name", "data", "hf_config", "split", "choices_column") if getattr(self, f) is not None]
        if stray or self.label != "label":
            raise ValueError(f"{(stray or ['label'])[0]} is for data: rows; a GLUE task gives its own")
        task = get_task(self.task)
        if self.choices is None or len(self.choices) != task.num_labels:
            names = f" ({', '.join(task.label_names)})" if task.label_names else ""
            raise ValueError(f"{len(self.choices or [])} choices, but {self.task} has {task.num_labels} labels{names}")
        fields = set(task.text_fields)
        try:
            self.template.format(**{name: "" for name in fields})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template {self.template!r} cannot be filled from {self.task}'s columns "
                             f"({', '.join(sorted(fields))}): {exc}") from None
        return self

    @property
    def key(self) -> str:
        """The task's name in rows (``zero_shot`` keys) and its eval split (``zero-shot/<key>``)."""
        return self.task or self.name

    @property
    def metric_name(self) -> str:
        return f"zero_shot_{self.key}"

    @property
    def delimiter(self) -> str:
        """What goes between the prompt and each choice (``target_delimiter``, or its default)."""
        if self.target_delimiter is not None:
            return self.target_delimiter
        return "" if self.task is not None else " "

    def prompts_of(self, rows: pd.DataFrame) -> list[str]:
        """The prompts of the task's rows: a GLUE row's filled template (data rows are filled when read)."""
        return render_prompts(self.template, rows) if self.task is not None else rows["prompt"].tolist()

    def choices_of(self, rows: pd.DataFrame) -> list[str] | list[list[str]]:
        """The continuations scored: a GLUE task's label words (shared), else each row's answers."""
        if self.task is not None:
            return list(self.choices)
        return [list(options) for options in rows[CHOICES_COLUMN]]


class LanguageModelingConfig(BaseModel):
    """A causal-LM task: perplexity on a corpus, and zero-shot classification tasks (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="the task's name in rows and reports")
    corpus: str = Field(description="'glue' (offline: GLUE sentences, see glue_tasks), a text/JSONL/parquet/CSV "
                                    "file, a folder of split files or save_to_disk folder, or a Hugging Face "
                                    "dataset id (hf:wikitext; paths relative to the suite)")
    column: str = Field("text", description="a JSONL/parquet/CSV file's or a dataset's text column")
    separator: str | None = Field(None, description="a .txt corpus: splits it into documents (e.g. a blank line)")
    hf_config: str | None = Field(None, description="a Hugging Face dataset corpus's configuration "
                                                    "(wikitext-2-raw-v1)")
    split: str | None = Field(None, description="a dataset corpus's split scored (default validation, else test)")
    train_corpus: str | None = Field(None, description="a file of text that compressors calibrate and train on "
                                                       "(corpus: glue uses the GLUE train split, a dataset its "
                                                       "train split)")
    glue_tasks: list[str] = Field(["rte", "mrpc"], min_length=1, description="corpus: glue: whose sentences")
    window: bounded_int(2, MAX_WINDOW) = Field(512, description="tokens per perplexity window")
    stride: bounded_int(1, MAX_WINDOW) | None = Field(None, description="tokens between window starts "
                                                                        "(default: window, no overlap)")
    zero_shot: list[ZeroShotConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _not_glue(cls, value: str) -> str:
        if value in TASKS or ".." in value:
            raise ValueError(f"task name {value!r}: give a name that is not a GLUE task and has no '..'")
        return value

    @field_validator("glue_tasks")
    @classmethod
    def _known_glue(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in TASKS]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a GLUE task; known: {', '.join(TASKS)}")
        return names

    @model_validator(mode="after")
    def _stride_fits(self) -> "LanguageModelingConfig":
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride {self.stride} exceeds window {self.window}: tokens would go unscored")
        if len({z.key for z in self.zero_shot}) != len(self.zero_shot):
            raise ValueError("zero_shot names a task twice")
        return self

    @property
    def effective_stride(self) -> int:
        return self.stride or self.window

    def spec(self) -> TaskSpec:
        return TaskSpec(self.name, ("text",), 0, (PERPLEXITY, *(z.metric_name for z in self.zero_shot)),
                        ("validation", *(ZERO_SHOT_SPLIT + z.key for z in self.zero_shot)),
                        kind="language_modeling")

    def needs_glue(self) -> bool:
        """Whether the task reads the suite's GLUE data (its corpus or a zero-shot task)."""
        return self.corpus == GLUE_CORPUS or any(z.task is not None for z in self.zero_shot)


def _documents(frame: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": list(frame)})


def _seeded(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of ``limit`` rows kept in their original order (documents stay in corpus order)."""
    if limit is None or limit >= len(frame):
        return frame.reset_index(drop=True)
    return frame.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)


def load_language_modeling_data(config: LanguageModelingConfig, glue_source: DataSource | None, base_dir: Path, *,
                                limit_train: int | None = None, limit_eval: int | None = None,
                                seed: int = 0) -> TaskData:
    """The task's rows (see the module docstring); a missing file or column is a one-line usage error."""
    spec = config.spec()
    if config.corpus == GLUE_CORPUS:
        if glue_source is None:
            raise UsageError(f"task {config.name}: corpus glue needs the GLUE data folder")
        evaluation = glue_corpus(glue_source, tasks=config.glue_tasks, split="validation")
        train_docs = glue_corpus(glue_source, tasks=config.glue_tasks, split="train").documents
        source = evaluation.source
    else:
        evaluation, train_docs, source = _user_corpus(config, base_dir)
    evals = {"validation": _seeded(_documents(evaluation.documents), limit_eval, seed)}
    for zero_shot in config.zero_shot:
        rows = _zero_shot_rows(config.name, zero_shot, glue_source, base_dir)
        limit = min(v for v in (zero_shot.limit, limit_eval, len(rows)) if v is not None)
        evals[ZERO_SHOT_SPLIT + zero_shot.key] = _seeded(rows, limit, seed)
    train = _seeded(_documents(train_docs), limit_train, seed)
    rows = fingerprint(spec, {"train": train, **evals}, limit_train=limit_train, limit_eval=limit_eval, seed=seed)
    # what is scored depends on more than the rows: windows, prompts, choices
    digest = stable_hash({"rows": rows, "task": config.model_dump()})
    return TaskData(spec, train, evals, source, digest)


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _is_corpus_file(path: Path) -> bool:
    """Whether :func:`load_corpus` reads ``path`` (a text, JSONL, parquet or CSV file; one that is missing too, so
    that it says so), rather than the file-task readers (folders, dataset ids, TSV, JSON)."""
    return path.suffix.lower() in CORPUS_FORMATS and not path.is_dir()


def _user_corpus(config: LanguageModelingConfig, base_dir: Path) -> tuple[Corpus, tuple[str, ...], str]:
    """The scored documents, the training documents and where they came from, for a corpus that is not GLUE: a
    text file as :func:`load_corpus` reads it, else a dataset's split (``split``, else validation, else test) and
    its train split (unless ``train_corpus`` names a file)."""
    path = _resolve(config.corpus, base_dir)
    dataset_train: tuple[str, ...] = ()
    if _is_corpus_file(path):
        evaluation = load_corpus(path, column=config.column, separator=config.separator, name=config.name)
        source = str(path)
    else:
        wanted = (config.split,) if config.split else EVAL_SPLITS
        split, columns, source = read_split_columns(config.corpus, base_dir, wanted, hf_config=config.hf_config,
                                                    what=f"task {config.name}: corpus")
        evaluation = Corpus(config.name, tuple(_column_text(columns, config.column, source)), source)
        if not config.train_corpus and split != "train":
            try:
                _, train_columns, train_source = read_split_columns(
                    config.corpus, base_dir, ("train",), hf_config=config.hf_config,
                    what=f"task {config.name}: corpus")
                dataset_train = tuple(_column_text(train_columns, config.column, train_source))
            except UsageError:
                dataset_train = ()          # a dataset without a train split: compressors that need text say so
    if config.train_corpus:
        train_path = _resolve(config.train_corpus, base_dir)
        dataset_train = load_corpus(train_path, column=config.column, separator=config.separator).documents
    return evaluation, dataset_train, source


def _column_text(columns: dict[str, list], column: str, where: str) -> list[str]:
    if column not in columns:
        raise UsageError(f"{where} has no column {column!r} (has {', '.join(map(str, columns))}); set column:")
    documents = [str(v).strip() for v in columns[column] if v is not None and str(v).strip()]
    if not documents:
        raise UsageError(f"{where}: column {column!r} holds no text")
    return documents


def _zero_shot_rows(task_name: str, zero_shot: ZeroShotConfig, glue_source: DataSource | None,
                    base_dir: Path) -> pd.DataFrame:
    """A zero-shot task's labelled rows: a GLUE task's validation rows, or a data task's rows with each row's
    answers in ``choices`` and the correct one's index in ``label``; a row that cannot be scored is an error
    naming it."""
    if zero_shot.task is not None:
        if glue_source is None:
            raise UsageError(f"task {task_name}: zero-shot {zero_shot.task} needs the GLUE data folder")
        rows = glue_source.load_split(get_task(zero_shot.task), "validation")
        return rows.loc[rows["label"].notna() & (rows["label"] >= 0)]
    wanted = (zero_shot.split,) if zero_shot.split else EVAL_SPLITS
    _, columns, where = read_split_columns(zero_shot.data, base_dir, wanted, hf_config=zero_shot.hf_config,
                                           what=f"task {task_name}: zero-shot {zero_shot.name}")
    frame = pd.DataFrame(columns)
    needed = [zero_shot.label] + ([zero_shot.choices_column] if zero_shot.choices_column else [])
    for column in needed:
        if column not in frame.columns:
            raise UsageError(f"{where} has no column {column!r} (has {', '.join(map(str, frame.columns))})")
    prompts, answers, labels = [], [], []
    for index, row in enumerate(frame.to_dict("records")):
        at = f"{where} row {index + 1}"
        try:
            prompts.append(zero_shot.template.format(**row))
            options = ([choice.format(**row) for choice in zero_shot.choices] if zero_shot.choices
                       else row[zero_shot.choices_column])
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"{at}: template or choices name {exc}, which the row lacks (it has "
                             f"{', '.join(map(str, frame.columns))})") from None
        if isinstance(options, str) or not hasattr(options, "__len__") or len(options) < 2:
            raise UsageError(f"{at}: {zero_shot.choices_column} must hold a list of two or more answers; got "
                             f"{str(options)[:60]!r}")
        options = tuple(str(option) for option in options)
        answers.append(options)
        labels.append(_answer_index(row[zero_shot.label], options, f"{at}: {zero_shot.label}"))
    if not prompts:
        raise UsageError(f"{where} holds no rows")
    counts = {len(options) for options in answers}
    if len(counts) > 1:
        raise UsageError(f"{where}: rows have {sorted(counts)} answers; every row needs the same number")
    return pd.DataFrame({"prompt": prompts, CHOICES_COLUMN: answers, "label": labels})


def _answer_index(value, options: tuple[str, ...], at: str) -> int:
    """The correct answer as an index into ``options``: an integer (or a whole-number string) in range, or the
    text of one of them."""
    text = str(value).strip() if value is not None else ""
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(options):
        return int(text)
    matches = [i for i, option in enumerate(options) if option.strip() == text]
    if text and matches:
        return matches[0]
    raise UsageError(f"{at}: {value!r} is neither an answer index 0..{len(options) - 1} nor one of the answers")
