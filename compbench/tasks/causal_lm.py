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
from compbench.tasks.glue import TASKS, TaskSpec, get_task
from compbench.tasks.language_modeling import glue_corpus, load_corpus
from compbench.tasks.sources import DataSource

GLUE_CORPUS = "glue"
PERPLEXITY = "perplexity"
ZERO_SHOT_SPLIT = "zero-shot/"           # eval split name prefix of a zero-shot task's rows
MAX_WINDOW = 1 << 17


class ZeroShotConfig(BaseModel):
    """A labelled GLUE task scored by comparing the log-likelihood of each label's words after a prompt."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="a GLUE classification task whose validation rows are scored")
    template: str = Field(description="the prompt: Python format fields name the task's text columns")
    choices: list[str] = Field(min_length=2, description="one continuation per label, in the task's label order")
    limit: bounded_int(1, MAX_ROWS) | None = Field(None, description="seeded subset of the rows (default: all)")

    @field_validator("task")
    @classmethod
    def _classification_task(cls, name: str) -> str:
        task = get_task(name) if name in TASKS else None
        if task is None or task.kind != "single_label":
            classes = ", ".join(n for n, t in TASKS.items() if t.kind == "single_label")
            raise ValueError(f"zero-shot task {name!r}: give a GLUE classification task ({classes})")
        return name

    @model_validator(mode="after")
    def _one_choice_per_label(self) -> "ZeroShotConfig":
        task = get_task(self.task)
        if len(self.choices) != task.num_labels:
            names = f" ({', '.join(task.label_names)})" if task.label_names else ""
            raise ValueError(f"{len(self.choices)} choices, but {self.task} has {task.num_labels} labels{names}")
        fields = set(task.text_fields)
        try:
            self.template.format(**{name: "" for name in fields})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template {self.template!r} cannot be filled from {self.task}'s columns "
                             f"({', '.join(sorted(fields))}): {exc}") from None
        return self

    @property
    def metric_name(self) -> str:
        return f"zero_shot_{self.task}"


class LanguageModelingConfig(BaseModel):
    """A causal-LM task: perplexity on a corpus, and zero-shot classification tasks (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="the task's name in rows and reports")
    corpus: str = Field(description="'glue' (offline: GLUE sentences, see glue_tasks) or a text/JSONL/parquet/CSV "
                                    "file (relative to the suite)")
    column: str = Field("text", description="a JSONL/parquet/CSV corpus's text column")
    separator: str | None = Field(None, description="a .txt corpus: splits it into documents (e.g. a blank line)")
    train_corpus: str | None = Field(None, description="a file of text that compressors calibrate and train on "
                                                       "(corpus: glue uses the GLUE train split)")
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
        if len({z.task for z in self.zero_shot}) != len(self.zero_shot):
            raise ValueError("zero_shot names a task twice")
        return self

    @property
    def effective_stride(self) -> int:
        return self.stride or self.window

    def spec(self) -> TaskSpec:
        return TaskSpec(self.name, ("text",), 0, (PERPLEXITY, *(z.metric_name for z in self.zero_shot)),
                        ("validation", *(ZERO_SHOT_SPLIT + z.task for z in self.zero_shot)),
                        kind="language_modeling")

    def needs_glue(self) -> bool:
        """Whether the task reads the suite's GLUE data (its corpus or a zero-shot task)."""
        return self.corpus == GLUE_CORPUS or bool(self.zero_shot)


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
        path = _resolve(config.corpus, base_dir)
        evaluation = load_corpus(path, column=config.column, separator=config.separator, name=config.name)
        train_docs = (load_corpus(_resolve(config.train_corpus, base_dir), column=config.column,
                                  separator=config.separator).documents if config.train_corpus else ())
        source = str(path)
    evals = {"validation": _seeded(_documents(evaluation.documents), limit_eval, seed)}
    for zero_shot in config.zero_shot:
        if glue_source is None:
            raise UsageError(f"task {config.name}: zero-shot {zero_shot.task} needs the GLUE data folder")
        task = get_task(zero_shot.task)
        rows = glue_source.load_split(task, "validation")
        rows = rows.loc[rows["label"].notna() & (rows["label"] >= 0)]
        limit = min(v for v in (zero_shot.limit, limit_eval, len(rows)) if v is not None)
        evals[ZERO_SHOT_SPLIT + zero_shot.task] = _seeded(rows, limit, seed)
    train = _seeded(_documents(train_docs), limit_train, seed)
    rows = fingerprint(spec, {"train": train, **evals}, limit_train=limit_train, limit_eval=limit_eval, seed=seed)
    # what is scored depends on more than the rows: windows, prompts, choices
    digest = stable_hash({"rows": rows, "task": config.model_dump()})
    return TaskData(spec, train, evals, source, digest)


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()
