"""Teacher-made transfer data: the train rows a limit left out (real SST-2, labels never carried), seeded
word-level augmentation checked edit by edit, the loss on a batch mixing labelled and unlabeled rows against a
hand computation, and a distillation build that trains on teacher-labelled transfer rows and keeps their logits
beside the teacher. Online distillation's mutual term by hand and peers that come to agree; born-again
generations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UsageError
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.compressors.distill import DistillParams
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.config.training import TrainConfig
from compbench.models.artifact import TEACHER_LOGITS
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import IGNORE_LABEL, labelled_mask, unlabeled
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.kd import TeacherSignal, distillation_loss
from compbench.training.online import Peers, mutual_term
from compbench.training.transfer import (
    AugmentConfig,
    TransferConfig,
    augment_text,
    augmented_rows,
    transfer_rows,
    word_frequencies,
)


def sst2(glue_data, limit_train=None):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=limit_train,
                          limit_eval=32)


def test_the_rows_a_limit_leaves_out_are_the_rest_of_the_split_without_labels(glue_data):
    data = sst2(glue_data, limit_train=500)
    full = ParquetFolderSource(glue_data / "glue").load_split(get_task("sst2"), "train")
    assert len(data.train) == 500 and len(data.spare_train) == len(full) - 500
    assert list(data.spare_train.columns) == ["sentence"]                 # no label carried
    assert not set(data.train["sentence"]) & set(data.spare_train["sentence"]) - set(
        full["sentence"][full["sentence"].duplicated()])                   # disjoint but for repeated sentences
    assert sorted(data.train["sentence"].tolist() + data.spare_train["sentence"].tolist()) == sorted(
        full["sentence"].tolist())
    assert sst2(glue_data).spare_train.empty
    assert data.fingerprint == sst2(glue_data, limit_train=500).fingerprint


def test_unlabeled_rest_takes_a_seeded_subset_and_refuses_when_there_is_none(glue_data, tmp_path):
    data = sst2(glue_data, limit_train=500)
    config = TransferConfig(unlabeled="rest", unlabeled_rows=300)
    rows = transfer_rows(config, data, tmp_path, seed=0)
    assert len(rows) == 300 and set(rows["sentence"]) <= set(data.spare_train["sentence"])
    assert rows.equals(transfer_rows(config, data, tmp_path, seed=0))
    with pytest.raises(UsageError, match="no training rows beyond the labelled ones"):
        transfer_rows(config, sst2(glue_data), tmp_path, seed=0)
    (tmp_path / "reviews.txt").write_text("a fine film\n\nthe plot drags\nwonderful acting\n")
    from_file = transfer_rows(TransferConfig(unlabeled="reviews.txt"), data, tmp_path, seed=0)
    assert from_file["sentence"].tolist() == ["a fine film", "the plot drags", "wonderful acting"]


def test_augmentation_edits_as_configured():
    rng = np.random.default_rng(0)
    text = "the quick brown fox jumps over the lazy dog"
    vocabulary = word_frequencies(["alpha beta", "beta gamma"])
    assert vocabulary[0].tolist() == ["alpha", "beta", "gamma"] and vocabulary[1].tolist() == [0.25, 0.5, 0.25]
    swapped = augment_text(text, rng, vocabulary, AugmentConfig(replace=0, delete=0, swap=1.0))
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text
    deleted = augment_text(text, rng, vocabulary, AugmentConfig(replace=0, delete=1.0, swap=0))
    assert len(deleted.split()) == 1 and deleted in text.split()          # never every word
    replaced = augment_text(text, rng, vocabulary, AugmentConfig(replace=1.0, delete=0, swap=0))
    assert set(replaced.split()) <= {"alpha", "beta", "gamma"} and len(replaced.split()) == 9
    # at 10% each, over many copies: about a tenth of the words deleted
    copies = [augment_text(text, rng, vocabulary, AugmentConfig()) for _ in range(2000)]
    assert 0.08 < 1 - np.mean([len(c.split()) for c in copies]) / 9 < 0.12


def test_augmented_copies_are_seeded_and_a_pair_task_edits_each_text(glue_data):
    rows = ParquetFolderSource(glue_data / "glue").load_split(get_task("mrpc"), "train").head(20)
    config = AugmentConfig(multiplier=3)
    copies = augmented_rows(get_task("mrpc"), rows, config, seed=1)
    assert len(copies) == 60 and list(copies.columns) == ["sentence1", "sentence2"]
    assert copies.equals(augmented_rows(get_task("mrpc"), rows, config, seed=1))
    assert not copies.equals(augmented_rows(get_task("mrpc"), rows, config, seed=2))
    assert (copies["sentence1"] != pd.concat([rows["sentence1"]] * 3, ignore_index=True)).mean() > 0.5


def test_unlabeled_rows_count_in_the_teacher_term_only():
    student = torch.tensor([[1.0, -1.0], [0.5, 0.2], [-0.3, 0.9]])
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, IGNORE_LABEL, 1])
    signal = TeacherSignal(alpha=0.5, temperature=2.0)
    got = distillation_loss(student, teacher, labels, signal, False)
    kd = F.kl_div(F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1), log_target=True,
                  reduction="batchmean")
    ce = F.cross_entropy(student[[0, 2]], labels[[0, 2]])
    assert float(got) == pytest.approx(float(0.5 * 4 * kd + 0.5 * ce), rel=1e-6)
    only_transfer = distillation_loss(student[1:2], teacher[1:2], labels[1:2], signal, False)
    assert torch.isfinite(only_transfer) and float(only_transfer) == pytest.approx(
        float(0.5 * 4 * F.kl_div(F.log_softmax(student[1:2] / 2, -1), F.log_softmax(teacher[1:2] / 2, -1),
                                 log_target=True, reduction="batchmean")), rel=1e-6)
    scores = torch.tensor([0.3, float("nan"), 0.8])
    assert labelled_mask(scores).tolist() == [True, False, True]
    assert np.isnan(unlabeled(get_task("stsb"), 2)).all() and (unlabeled(get_task("sst2"), 2) == -100).all()


def test_transfer_parameters_say_what_is_wrong():
    with pytest.raises(ValidationError, match="give unlabeled"):
        TransferConfig()
    with pytest.raises(ValidationError, match="alpha 0"):
        DistillParams(student={"layers": [0]}, alpha=0.0, transfer={"augment": {}})
    with pytest.raises(ValidationError, match="every edit probability is 0"):
        AugmentConfig(replace=0, delete=0, swap=0)


def test_a_student_trains_on_teacher_labelled_transfer_rows(responsive, glue_data, tmp_path):
    data = sst2(glue_data, limit_train=64)
    builder = PipelineBuild(responsive, data, ArtifactStore(tmp_path / "store"), seed=0, device="cpu",
                            reporter=Reporter(enabled=False), max_seq_len=32, base_dir=tmp_path)
    train = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "seed": 3}
    transfer = {"unlabeled": "rest", "unlabeled_rows": 40, "augment": {"multiplier": 2}}
    step = StepConfig(compressor="distill", params={"student": {"layers": [1]}, "alpha": 0.9, "train": train,
                                                    "selection_rows": 8, "transfer": transfer})
    student = builder.run(PipelineConfig(name="kd-transfer", steps=[step]))
    record = student.lineage[-1]
    # 40 spare rows + 2 edited copies of each of the 56 rows trained on (8 held out to choose the epoch)
    assert record["transfer_rows"] == 40 + 2 * 56 and record["train_rows"] == 56 + 40 + 2 * 56
    assert record["steps"] == -(-(56 + 152) // 16)
    # the teacher's logits on the transfer rows are kept beside it, as its logits on the labelled rows are
    kept = sorted((responsive.path / TEACHER_LOGITS).glob("*.npy"))
    assert {64, 152} <= {np.load(p).shape[0] for p in kept}


# ---- online (deep mutual learning) and born-again generations ------------------------------------------------------


def test_the_mutual_term_by_hand():
    own = torch.tensor([[1.0, 0.0], [0.2, 0.4]], requires_grad=True)
    peer_a, peer_b = torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    p = lambda x: F.softmax(x, -1).numpy()                              # noqa: E731
    kl = lambda a, b: float(np.mean(np.sum(a * np.log(a / b), -1)))     # noqa: E731
    want = 0.5 * (kl(p(peer_a), p(own.detach())) + kl(p(peer_b), p(own.detach())))
    got = mutual_term(own, [peer_a, peer_b], regression=False)
    assert float(got) == pytest.approx(want, rel=1e-6)
    got.backward()
    assert own.grad.abs().sum() > 0
    assert float(mutual_term(torch.tensor([[0.5]]), [torch.tensor([[0.1]])], regression=True)) == pytest.approx(0.16)


def test_peers_trained_together_come_to_agree(glue_data, minilm_path):
    """Two 1-layer BERT students on real SST-2 rows, no teacher (alpha 0), mutual learning only: on rows neither
    trained on, the KL between their predictions falls."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from compbench.tasks.encoding import encode_rows, iter_batches
    from compbench.training.loop import fit
    from compbench.training.teachers import row_loss

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    kept, peer = BertForSequenceClassification(config), BertForSequenceClassification(config)
    task = get_task("sst2")
    frame = ParquetFolderSource(glue_data / "glue").load_split(task, "train").head(400)
    train, held = encode_rows(tokenizer, task, frame.iloc[:320], 32), encode_rows(tokenizer, task, frame.iloc[320:], 32)
    peers = Peers([peer], weight=2.0)
    (batch, _), = iter_batches(tokenizer, held, len(held))
    batch = {k: torch.from_numpy(v) for k, v in batch.items()}

    def disagreement() -> float:
        with torch.no_grad():
            return float(mutual_term(kept.eval()(**batch).logits, [peer.eval()(**batch).logits], False))

    before = disagreement()
    fit(kept, tokenizer, train, TrainConfig(epochs=2, batch_size=32, learning_rate=2e-3, seed=0),
        loss_fn=row_loss(TeacherSignal(alpha=0.0), False, peers=peers), auxiliary=peers)
    assert disagreement() < 0.5 * before


def test_online_and_born_again_builds(responsive, glue_data, tmp_path):
    data = sst2(glue_data, limit_train=64)
    builder = PipelineBuild(responsive, data, ArtifactStore(tmp_path / "store"), seed=0, device="cpu",
                            reporter=Reporter(enabled=False), max_seq_len=32, base_dir=tmp_path)
    train = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "seed": 3}
    online = StepConfig(compressor="distill", params={"student": {"layers": [1]}, "alpha": 0.5, "peers": 2,
                                                      "train": train, "selection_rows": 8})
    record = builder.run(PipelineConfig(name="online", steps=[online])).lineage[-1]
    assert record["peers"] == 2 and record["steps"] == 4
    born_again = StepConfig(compressor="distill", params={"student": {"layers": [0, 1]}, "alpha": 1.0,
                                                          "generations": 2, "train": train, "keep_best": False})
    student = builder.run(PipelineConfig(name="born-again", steps=[born_again]))
    generations = student.lineage[-1]["generations"]
    assert len(generations) == 2 and all(g["steps"] == 4 for g in generations)
    assert student.torch_model().config.num_hidden_layers == 2
    with pytest.raises(ValidationError, match="generations: alpha 0"):
        DistillParams(student={"layers": [0]}, alpha=0.0, generations=2)
