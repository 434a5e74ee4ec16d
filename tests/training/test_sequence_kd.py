"""Sequence-level distillation of a causal LM (plumbing on the tiny random Llama; the real SmolLM2 comparison is
suites/distill-llm.yaml): the teacher's completions are generated as configured, kept beside it and reused, the
student trains on them, and a student with another tokenizer is accepted only where no token-level term needs
the same vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data
from compbench.tasks.sources import detect_layout
from compbench.training.sequence import GENERATED, SequenceConfig, generate_completions, prompts_of

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
    assert len(prompts) == 4 and all(len(tokenizer(p, add_special_tokens=False).input_ids) <= 6 for p in prompts)
    assert prompts == prompts_of(config, documents, tokenizer, Path("."), seed=0)
    sampled = SequenceConfig(prompt_tokens=6, new_tokens=5, samples=2, temperature=0.7)
    texts = generate_completions(tiny_causal_lm.torch_model().eval(), tokenizer, prompts, sampled, seed=0,
                                 batch_size=3)
    assert len(texts) == 8 and all(t.startswith(prompts[i // 2]) for i, t in enumerate(texts))
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
    kept = list((tiny_causal_lm.path / GENERATED).glob("*.npy"))
    assert len(kept) >= 1
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    # token-level KD on the same teacher-written text: the set is read back, not written again
    again = build(tiny_causal_lm, glue_data, tmp_path / "again", {"student": {"layers": [1]}, "alpha": 0.5,
                                                                  "sequence": sequence, "train": TRAIN,
                                                                  "keep_best": False})
    assert again.lineage[-1]["teacher_written"] == 6 and again.lineage[-1]["teachers"] == 1
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes


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
