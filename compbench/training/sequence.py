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

The set is an artifact of its own: kept beside the teacher (``generated/<key>.npy``, sealed), keyed by the
teacher's content, the prompts and every setting, and reused by every student distilled from it. Because only
text passes from teacher to student, the student may tokenise differently (any causal LM, ``student: {model:
...}``), as long as no token-level term (``alpha > 0``) compares their distributions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compbench.common.hashing import stable_hash
from compbench.common.sealing import load_sealed_array, save_sealed_array
from compbench.training.transfer import text_file_rows

GENERATED = "generated"
GENERATION_BATCH = 8


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

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> "SequenceConfig":
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"samples {self.samples}: greedy decoding (temperature 0) writes one completion per "
                             "prompt; set temperature > 0 to sample several")
        if self.min_new_tokens > self.new_tokens:
            raise ValueError(f"min_new_tokens {self.min_new_tokens} exceeds new_tokens {self.new_tokens}")
        return self


def prompts_of(config: SequenceConfig, documents: list[str], tokenizer, base_dir: Path, seed: int) -> list[str]:
    """The prompts the teacher completes (module docstring), in a seeded order and number."""
    if config.prompts == "corpus":
        prompts = [tokenizer.decode(tokenizer(doc, add_special_tokens=False).input_ids[:config.prompt_tokens])
                   for doc in documents]
    else:
        prompts = text_file_rows(base_dir, config.prompts, config.column)
    prompts = [p for p in prompts if p.strip()]
    if config.max_prompts is not None and config.max_prompts < len(prompts):
        keep = np.sort(np.random.default_rng(seed).choice(len(prompts), config.max_prompts, replace=False))
        prompts = [prompts[i] for i in keep]
    if config.chat_template:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    return prompts


def generate_completions(model, tokenizer, prompts: list[str], config: SequenceConfig, seed: int,
                         batch_size: int = GENERATION_BATCH, reporter=None) -> list[str]:
    """prompt + completion texts, ``config.samples`` per prompt, in prompt order; short completions dropped."""
    import torch

    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"                 # decoder-only: new tokens follow every prompt's last token
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    sampled = config.temperature > 0
    texts: list[str] = []
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
                        prompt = batch[row // config.samples]
                        texts.append(prompt + tokenizer.decode(real, skip_special_tokens=True))
                if reporter is not None:
                    reporter.log(f"  teacher wrote {min(start + batch_size, len(prompts))}/{len(prompts)} prompts' "
                                 "completions")
    finally:
        tokenizer.padding_side = padding_side
    return texts


def generated_set(teacher, prompts: list[str], config: SequenceConfig, seed: int, reporter) -> list[str]:
    """The teacher's completions of ``prompts``, from its folder when made before (module docstring)."""
    key = stable_hash({"teacher": teacher.content_hash, "prompts": prompts, "config": config.model_dump(),
                       "seed": seed})
    path = teacher.path / GENERATED / f"{key}.npy"
    kept = load_sealed_array(path)
    if kept is not None:
        reporter.log(f"  teacher-written set from cache ({len(kept)} texts)")
        return [str(text) for text in kept]
    tokenizer = teacher.tokenizer()
    texts = generate_completions(teacher.torch_model().eval(), tokenizer, prompts, config, seed, reporter=reporter)
    if not texts:
        raise ValueError("the teacher wrote no completion of min_new_tokens tokens or more")
    try:
        save_sealed_array(path, np.array(texts))
    except OSError:          # a read-only shared cache: write it again next time
        pass
    return texts
