"""Sequence-level distillation of a causal LM (plumbing on the tiny random Llama; the real SmolLM2 comparison is
suites/distill-llm.yaml): the teacher's completions are generated as configured, kept beside it and reused, the
student trains on them, and a student with another tokenizer is accepted only where no token-level term needs
the same vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.models.artifact import TEACHER_WRITTEN
from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data
from compbench.tasks.sources import detect_layout
from compbench.training.sequence import SequenceConfig, generate_completions, gives_answer, prompts_of

TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "seed": 0, "max_seq_len": 32}


def lm_data(glue_data: Path):
    config = LanguageModelingConfig(name="glue-text", corpus="glue", glue_tasks=["rte"])
    return load_language_modeling_data(config, detect_layout(glue_data / "glue"), Path("."), limit_train=12,
                                       limit_eval=4)


def test_prompts_are_the_documents_openings_and_completions_have_the_length_asked(tiny_causal_lm, glue_data):
    tokenizer = tiny_causal_lm.tokenizer()
    documents = lm_data(glue_data).train["text"].tolist()
    config = SequenceConfig(prompt_tokens=6, new_tokens=5, max_prompts=4)
    prompts = prompts_of(config, documents, tokenizer, Path("."), seed=0)
    assert prompts.answers is None
    prompts = prompts.texts
    assert len(prompts) == 4 and all(len(tokenizer(p, add_special_tokens=False).input_ids) <= 6 for p in prompts)
    assert prompts == prompts_of(config, documents, tokenizer, Path("."), seed=0).texts
    sampled = SequenceConfig(prompt_tokens=6, new_tokens=5, samples=2, temperature=0.7)
    written = generate_completions(tiny_causal_lm.torch_model().eval(), tokenizer, prompts, sampled, seed=0,
                                   batch_size=3)
    assert [index for index, _ in written] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(isinstance(text, str) for _, text in written) and len({text for _, text in written}) > 1
    assert tokenizer.padding_side == "right"                        # restored after left-padded generation
    with pytest.raises(ValidationError, match="greedy decoding"):
        SequenceConfig(samples=2)


def build(tiny_causal_lm, glue_data, tmp_path, params: dict):
    builder = PipelineBuild(tiny_causal_lm, lm_data(glue_data), ArtifactStore(tmp_path / "store"), seed=0,
                            device="cpu", reporter=Reporter(enabled=False), max_seq_len=32, base_dir=tmp_path)
    return builder.run(PipelineConfig(name="seq", steps=[StepConfig(compressor="distill", params=params)]))


def test_a_student_trains_on_the_teachers_completions_which_are_kept_and_reused(tiny_causal_lm, glue_data,
                                                                               tmp_path):
    sequence = {"max_prompts": 6, "prompt_tokens": 8, "new_tokens": 12, "temperature": 0.8, "top_p": 0.9}
    student = build(tiny_causal_lm, glue_data, tmp_path, {"student": {"layers": [0]}, "alpha": 0.0,
                                                          "sequence": sequence, "train": TRAIN,
                                                          "keep_best": False})
    record = student.lineage[-1]
    assert record["teacher_written"] == 6 and record["steps"] >= 1 and record["teachers"] == 0
    kept = list((tiny_causal_lm.path / TEACHER_WRITTEN).glob("*.npy"))
    assert len(kept) >= 1
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    # token-level KD on the same teacher-written text: the set is read back, not written again
    again = build(tiny_causal_lm, glue_data, tmp_path / "again", {"student": {"layers": [1]}, "alpha": 0.5,
                                                                  "sequence": sequence, "train": TRAIN,
                                                                  "keep_best": False})
    assert again.lineage[-1]["teacher_written"] == 6 and again.lineage[-1]["teachers"] == 1
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes
    # the written set is a cache beside the teacher, outside its seal: the teacher still verifies and is served
    from compbench.cache.store import UNSEALED
    from compbench.common.sealing import seal_problem
    from compbench.models.artifact import ModelArtifact

    assert seal_problem(tiny_causal_lm.path, ModelArtifact.load(tiny_causal_lm.path).files, UNSEALED) is None


def test_the_student_learns_the_text_the_teacher_wrote(tiny_causal_lm, glue_data, tmp_path):
    """A short real run lowers the student's language-modelling loss on the teacher's completions."""
    import torch

    from compbench.training.sequence import generated_set
    from compbench.training.students import StudentSpec, build_student

    config = SequenceConfig(max_prompts=6, prompt_tokens=8, new_tokens=12, temperature=0.8, top_p=0.9)
    prompts = prompts_of(config, lm_data(glue_data).train["text"].tolist(), tiny_causal_lm.tokenizer(), Path("."), 0)
    texts = generated_set(tiny_causal_lm, prompts, config, 0, Reporter(enabled=False)).texts
    tokenizer = tiny_causal_lm.tokenizer()

    def loss(model) -> float:
        with torch.inference_mode():
            return float(np.mean([model(**(ids := tokenizer(t, return_tensors="pt")), labels=ids["input_ids"]).loss
                                  for t in texts]))

    before = loss(build_student(tiny_causal_lm, StudentSpec(layers=[0]), seed=0)[0].eval())
    student = build(tiny_causal_lm, glue_data, tmp_path, {"student": {"layers": [0]}, "alpha": 0.0,
                                                          "sequence": config.model_dump(), "keep_best": False,
                                                          "train": {**TRAIN, "batch_size": 1, "epochs": 4,
                                                                    "learning_rate": 5e-3}})
    after = loss(student.torch_model().eval())
    assert after < before - 0.5, (before, after)


def test_an_answer_is_given_by_the_patterns_last_match_or_as_a_whole_word():
    pattern = r"(?i)answer:\s*(\w+)"
    assert gives_answer("first answer: no. On reflection, Answer: Positive", "positive", pattern)
    assert not gives_answer("answer: positive, then answer: negative", "positive", pattern)
    assert not gives_answer("it is positive", "positive", pattern)          # the pattern is not met
    assert gives_answer("I'd say it is  Very Positive.", "very positive", None)
    assert not gives_answer("positively glowing", "positive", None)        # not as a whole word
    assert not gives_answer("anything", "  ", None)                         # an empty answer matches nothing
    with pytest.raises(ValidationError, match="has no group"):
        SequenceConfig(prompts="p.jsonl", answer_column="label", answer_pattern="answer: \\w+")
    with pytest.raises(ValidationError, match="prompt file"):
        SequenceConfig(answer_column="label")
    with pytest.raises(ValidationError, match="needs answer_column"):
        SequenceConfig(prompts="p.jsonl", answer_pattern="(x)")


def test_only_completions_that_give_their_prompts_answer_are_trained_on(tiny_causal_lm, tmp_path, glue_data):
    """Rejection sampling on a prompt file with answers: the teacher's seeded completions are known beforehand, so
    half of the prompts get an answer their completion gives (its last word) and half one it cannot."""
    import json

    tokenizer = tiny_causal_lm.tokenizer()
    prompts = [" ".join(text.split()[:6]) for text in lm_data(glue_data).train["text"].tolist()[:8]]
    config = {"new_tokens": 6, "temperature": 1.0}          # sampled: greedy decoding of random weights writes nothing
    written = generate_completions(tiny_causal_lm.torch_model().eval(), tokenizer, prompts,
                                   SequenceConfig(**config), seed=0)
    last_words = {index: text.split()[-1] for index, text in written if text.split()}
    answers = [last_words[i] if i % 2 == 0 and i in last_words else "zzzz-never-written" for i in range(8)]
    with open(tmp_path / "prompts.jsonl", "w") as out:
        for prompt, answer in zip(prompts, answers):
            out.write(json.dumps({"question": prompt, "gold": answer}) + "\n")
    sequence = {**config, "prompts": "prompts.jsonl", "column": "question", "answer_column": "gold"}
    student = build(tiny_causal_lm, glue_data, tmp_path, {"student": {"layers": [0]}, "alpha": 0.0,
                                                          "sequence": sequence, "train": TRAIN, "keep_best": False})
    record = student.lineage[-1]
    expected = sum(1 for i in range(0, 8, 2) if i in last_words)
    assert expected >= 1 and record["teacher_written"] == expected and record["teacher_completions"] == len(written)


def test_sequence_level_works_across_tokenizers_token_level_does_not(tiny_causal_lm, glue_data, tmp_path):
    """A student with a vocabulary of its own (a word-level tokenizer built here) learns from the teacher's text
    alone; asked for token-level KD too it is refused with the reason."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(lm_data(glue_data).train["text"].tolist(),
                              trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="[EOS]")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path / "word-student"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sequence = {"max_prompts": 4, "prompt_tokens": 8, "new_tokens": 8}
    student = build(tiny_causal_lm, glue_data, tmp_path, {"student": {"model": str(folder)}, "alpha": 0.0,
                                                          "sequence": sequence, "train": TRAIN, "keep_best": False})
    assert student.lineage[-1]["teacher_written"] == 4 and len(student.tokenizer()) == len(tokenizer)
    with pytest.raises(UnsupportedError, match="works across tokenizers"):
        build(tiny_causal_lm, glue_data, tmp_path / "token", {"student": {"model": str(folder)}, "alpha": 0.5,
                                                              "sequence": sequence, "train": TRAIN})


def test_a_classifier_is_pointed_to_transfer_data(responsive, glue_data, tmp_path):
    from compbench.tasks.data import load_task_data
    from compbench.tasks.glue import get_task
    from compbench.tasks.sources import ParquetFolderSource

    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=32, limit_eval=8)
    builder = PipelineBuild(responsive, data, ArtifactStore(tmp_path), seed=0, device="cpu",
                            reporter=Reporter(enabled=False), max_seq_len=32)
    step = StepConfig(compressor="distill", params={"student": {"layers": [1]}, "sequence": {}, "train": TRAIN})
    with pytest.raises(UnsupportedError, match="teacher-made rows are transfer"):
        builder.run(PipelineConfig(name="seq", steps=[step]))
