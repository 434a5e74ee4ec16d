"""Sequence-level, black-box distillation of causal LMs (Kim & Rush 2016; DeepSeek-R1's distilled models): the
teacher writes completions for a set of prompts and the student is fine-tuned on the prompt + completion text
with the plain language-modelling loss (``alpha: 0``), or with token-level KD on that text as well.

Prompts (``SequenceConfig.prompts``)
    ``corpus``: the first ``prompt_tokens`` tokens of each training document of the task; or a file (one prompt
    per line of a ``.txt``, or a column of a JSONL/CSV/parquet file), relative to the suite. ``chat_template``
    wraps each as a user turn in the teacher tokenizer's chat template (an instruct model's own format).
Generation
    ``new_tokens`` per completion, ``samples`` completions per prompt, greedy (``temperature: 0``) or sampled
    (``temperature``, ``top_p``), seeded; batches are left-padded. Completions shorter than ``min_new_tokens``
    (the teacher stopped at once) are dropped.
Filtering (rejection sampling, as DeepSeek-R1's fine-tuning data was filtered)
    With ``answer_column`` (a prompt file's column of reference answers) only completions that give their
    prompt's answer are kept: the last match of ``answer_pattern``'s first group equals the answer (case and
    surrounding space ignored), or without a pattern, the answer appears in the completion as a whole word.
    Sample several completions per prompt (``samples``) so that most prompts keep one.

The set is an artifact of its own: kept beside the teacher (``generated/<key>.npy``, sealed), keyed by the
teacher's content, the prompts and every generation setting, and reused by every student distilled from it
(the filter is applied on reading, so another filter reuses the same completions). Because only
text passes from teacher to student, the student may tokenise differently (any causal LM, ``student: {model:
...}``), as long as no token-level term (``alpha > 0``) compares their distributions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.common.hashing import stable_hash
from compbench.common.sealing import load_sealed_array, save_sealed_array
from compbench.models.artifact import TEACHER_WRITTEN
from compbench.tasks.language_modeling import CORPUS_FORMATS
from compbench.training.transfer import text_file_columns, text_file_rows

GENERATION_BATCH = 8
FILTER_FIELDS = {"answer_column", "answer_pattern"}     # applied to the kept completions: not in their key


class SequenceConfig(BaseModel):
    """What the teacher writes for the student (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    prompts: Literal["corpus"] | str = Field("corpus", description="'corpus' (the training documents' openings) "
                                                                   "or a file of prompts")
    column: str = Field("text", description="a JSONL/CSV/parquet prompt file's column")
    max_prompts: int | None = Field(None, ge=1, description="a seeded subset of the prompts")
    prompt_tokens: int = Field(32, ge=1, le=4096, description="corpus prompts: tokens of each document's opening")
    new_tokens: int = Field(64, ge=1, le=4096, description="tokens the teacher writes per completion")
    min_new_tokens: int = Field(1, ge=1, description="shorter completions are dropped")
    samples: int = Field(1, ge=1, le=16, description="completions per prompt")
    temperature: float = Field(0.0, ge=0, description="0: greedy; else sampling at this temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling: nucleus mass")
    chat_template: bool = Field(False, description="wrap prompts as a user turn of the teacher's chat template")
    answer_column: str | None = Field(None, description="a prompt file's column of reference answers: only "
                                                        "completions that give their prompt's answer are kept")
    answer_pattern: str | None = Field(None, description="a regular expression whose first group is a "
                                                         "completion's answer (its last match); default: the "
                                                         "answer appears as a whole word")

    @model_validator(mode="after")
    def _settings_agree(self) -> "SequenceConfig":
        if self.answer_column is not None and (self.prompts == "corpus"
                                               or CORPUS_FORMATS.get(Path(self.prompts).suffix.lower()) == "text"):
            raise ValueError(f"answer_column {self.answer_column!r}: the answers are a column of the prompt file; "
                             "give prompts: a JSONL, CSV or parquet file")
        if self.answer_pattern is not None:
            if self.answer_column is None:
                raise ValueError("answer_pattern needs answer_column (the answers to compare with)")
            try:
                groups = re.compile(self.answer_pattern).groups
            except re.error as exc:
                raise ValueError(f"answer_pattern {self.answer_pattern!r} is not a regular expression: {exc}") from None
            if groups < 1:
                raise ValueError(f"answer_pattern {self.answer_pattern!r} has no group; put the answer in (...)")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"samples {self.samples}: greedy decoding (temperature 0) writes one completion per "
                             "prompt; set temperature > 0 to sample several")
        if self.min_new_tokens > self.new_tokens:
            raise ValueError(f"min_new_tokens {self.min_new_tokens} exceeds new_tokens {self.new_tokens}")
        return self


@dataclass(frozen=True)
class Prompts:
    texts: list[str]
    answers: list[str] | None = None        # each prompt's reference answer (``answer_column``), or none


def prompts_of(config: SequenceConfig, documents: list[str], tokenizer, base_dir: Path, seed: int) -> Prompts:
    """The prompts the teacher completes (module docstring), in a seeded order and number, with their answers."""
    answers = None
    if config.prompts == "corpus":
        texts = [tokenizer.decode(tokenizer(doc, add_special_tokens=False).input_ids[:config.prompt_tokens])
                 for doc in documents]
    elif config.answer_column is not None:
        pairs = text_file_columns(base_dir, config.prompts, [config.column, config.answer_column])
        texts, answers = [text for text, _ in pairs], [answer for _, answer in pairs]
    else:
        texts = text_file_rows(base_dir, config.prompts, config.column)
    kept = [i for i, text in enumerate(texts) if text.strip()]
    if config.max_prompts is not None and config.max_prompts < len(kept):
        kept = [kept[i] for i in np.sort(np.random.default_rng(seed).choice(len(kept), config.max_prompts,
                                                                            replace=False))]
    texts = [texts[i] for i in kept]
    if config.chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in texts]
    return Prompts(texts, None if answers is None else [answers[i] for i in kept])


def generate_completions(model, tokenizer, prompts: list[str], config: SequenceConfig, seed: int,
                         batch_size: int = GENERATION_BATCH, reporter=None) -> list[tuple[int, str]]:
    """(prompt index, completion) pairs, ``config.samples`` per prompt, in prompt order; short ones dropped."""
    import torch

    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"                 # decoder-only: new tokens follow every prompt's last token
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    sampled = config.temperature > 0
    written: list[tuple[int, str]] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=not
                                    config.chat_template)
                encoded = {k: encoded[k] for k in ("input_ids", "attention_mask")}   # (a BERT tokenizer adds more)
                out = model.generate(**encoded, max_new_tokens=config.new_tokens, do_sample=sampled,
                                     num_return_sequences=config.samples, pad_token_id=tokenizer.pad_token_id,
                                     **({"temperature": config.temperature, "top_p": config.top_p} if sampled
                                        else {}))
                new = out[:, encoded["input_ids"].shape[1]:]
                for row, tokens in enumerate(new):
                    real = tokens[tokens != tokenizer.pad_token_id]
                    if len(real) >= config.min_new_tokens:
                        text = tokenizer.decode(real, skip_special_tokens=True)
                        written.append((start + row // config.samples, text))
                if reporter is not None:
                    reporter.log(f"  teacher wrote {min(start + batch_size, len(prompts))}/{len(prompts)} prompts' "
                                 "completions")
    finally:
        tokenizer.padding_side = padding_side
    return written


def _normal(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def gives_answer(completion: str, answer: str, pattern: str | None) -> bool:
    """Whether ``completion`` gives ``answer`` (module docstring: filtering)."""
    if pattern is not None:
        found = [match.group(1) for match in re.finditer(pattern, completion)]
        return bool(found) and found[-1] is not None and _normal(found[-1]) == _normal(answer)
    words = _normal(answer)
    return bool(words) and re.search(rf"(?<!\w){re.escape(words)}(?!\w)", _normal(completion)) is not None


@dataclass(frozen=True)
class TeacherText:
    texts: list[str]          # prompt + completion, the student's training text
    written: int              # completions the teacher wrote (before the answer filter)


def generated_set(teacher, prompts: Prompts, config: SequenceConfig, seed: int, reporter) -> TeacherText:
    """The teacher's completions of ``prompts`` (from its folder when written before), filtered by the answers
    where given, each after its prompt (module docstring)."""
    key = stable_hash({"teacher": teacher.content_hash, "prompts": prompts.texts, "seed": seed, "pairs": 1,
                       "config": config.model_dump(exclude=FILTER_FIELDS)})
    path = teacher.path / TEACHER_WRITTEN / f"{key}.npy"
    kept = load_sealed_array(path)
    if kept is not None:
        reporter.log(f"  teacher-written set from cache ({len(kept)} texts)")
        written = [(int(index), str(text)) for index, text in kept]
    else:
        written = generate_completions(teacher.torch_model().eval(), teacher.tokenizer(), prompts.texts, config, seed,
                                       reporter=reporter)
        if not written:
            raise ValueError("the teacher wrote no completion of min_new_tokens tokens or more")
        try:
            save_sealed_array(path, np.array([(str(index), text) for index, text in written]))
        except OSError:          # a read-only shared cache: write it again next time
            pass
    count = len(written)
    if prompts.answers is not None:
        answering = [(i, text) for i, text in written if gives_answer(text, prompts.answers[i], config.answer_pattern)]
        reporter.log(f"  {len(answering)} of {len(written)} completions give their prompt's answer "
                     f"({len({i for i, _ in answering})} of {len(prompts.texts)} prompts)")
        if not answering:
            raise ValueError(f"none of the teacher's {len(written)} completions gives its prompt's answer "
                             f"({config.answer_column!r}); check answer_pattern, or sample more (samples)")
        written = answering
    return TeacherText([prompts.texts[i] + text for i, text in written], count)
