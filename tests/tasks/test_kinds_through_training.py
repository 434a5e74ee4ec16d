"""File tasks of each kind through what trains and scores a model: the labels a transformers head takes (float
multi-hot for its BCE), evaluation during training, the accuracy of a timed session (what rows store), the
report's paired delta on those rows, and the distillation loss of a multi-label task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from compbench.config.measure import MeasureConfig
from compbench.measurement.accuracy import evaluate_session
from compbench.results.analysis import paired_delta
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, iter_batches
from compbench.tasks.files import FileTaskConfig, resolve_file_task
from compbench.tasks.metrics import METRICS
from compbench.training.evaluation import module_runner, rows_evaluator
from compbench.training.kd import TeacherSignal, distillation_loss, divergence

KEYWORDS = ("film", "movie", "story", "funny")


@pytest.fixture(scope="module")
def sentences(glue_data: Path) -> dict[str, pd.DataFrame]:
    return {"train": pd.read_parquet(glue_data / "glue" / "sst2" / "train.parquet").head(400),
            "validation": pd.read_parquet(glue_data / "glue" / "sst2" / "validation.parquet")}


@pytest.fixture(scope="module")
def tokenizer(minilm_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_model(num_labels: int, problem_type: str, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        problem_type=problem_type)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(30)     # outputs that differ between rows (a random head barely moves)
    return model


class ModuleSession:
    """A timed session's interface (``run``) over a PyTorch module."""

    def __init__(self, module) -> None:
        self.run = module_runner(module)


@pytest.fixture(scope="module")
def topics(sentences, tmp_path_factory):
    folder = tmp_path_factory.mktemp("topics")
    for split, frame in sentences.items():
        tags = [";".join(k for k in KEYWORDS if k in s.split()) for s in frame["sentence"]]
        pd.DataFrame({"text": frame["sentence"], "tags": tags}).to_csv(folder / f"{split}.csv", index=False)
    spec, source = resolve_file_task(FileTaskConfig(name="topics", data=".", text="text", label="tags",
                                                    label_separator=";"), folder)
    return load_task_data(spec, source, limit_eval=200, seed=0)


def test_multi_label_labels_train_a_transformers_head(topics, tokenizer) -> None:
    task = topics.task
    rows = encode_rows(tokenizer, task, topics.train, max_seq_len=32)
    assert rows.labels.dtype == np.float32 and rows.labels.shape == (400, 4)
    model = tiny_model(4, "multi_label_classification").train()
    batch, targets = next(iter_batches(tokenizer, rows, 16))
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
    labels = torch.from_numpy(targets["labels"])
    output = model(**inputs, labels=labels)                       # transformers' own loss: BCE with logits
    expected = F.binary_cross_entropy_with_logits(output.logits.detach(), labels)
    assert float(output.loss.detach()) == pytest.approx(float(expected))
    output.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    score = rows_evaluator(task, tokenizer, rows)(model.eval())
    assert 0.0 <= score <= 1.0 and math.isfinite(score)


def test_multi_label_rows_are_scored_stored_and_compared(topics, tokenizer) -> None:
    config = MeasureConfig(bootstrap_resamples=200)
    first, logits = evaluate_session(ModuleSession(tiny_model(4, "multi_label_classification", 0)), tokenizer,
                                     topics, 32, config, seed=0)
    second, _ = evaluate_session(ModuleSession(tiny_model(4, "multi_label_classification", 1)), tokenizer,
                                 topics, 32, config, seed=0)
    assert logits.shape == (200, 4)
    assert first["metric_name"] == "micro_f1" and set(first["metrics"]) == {"micro_f1", "macro_f1"}
    assert first["eval_rows"] == 200 and len(first["predictions"]) == 200
    assert all(len(p) == 4 and set(p) <= {0, 1} for p in first["predictions"])
    assert first["labels"] == [list(label) for label in topics.eval["validation"]["label"]]
    assert all(isinstance(v, int) for row in first["labels"] for v in row)            # ints, not 1.0
    assert first["predictions"] == (logits > 0).astype(int).tolist()
    low, high = first["metric_ci95"]
    assert low <= first["metric"] <= high
    rows = [json.loads(json.dumps({**result, "task": "topics", "status": "ok"})) for result in (first, second)]
    delta = paired_delta(rows[1], rows[0])
    assert delta.value == pytest.approx(second["metric"] - first["metric"])
    assert delta.low <= delta.value <= delta.high


def test_binary_auroc_rows_store_log_probabilities(sentences, tokenizer, tmp_path: Path) -> None:
    for split, frame in sentences.items():
        frame.assign(label=frame["label"].map({0: "ham", 1: "spam"})).to_csv(tmp_path / f"{split}.csv", index=False)
    spec, source = resolve_file_task(FileTaskConfig(name="spam", data=".", text="sentence", label="label",
                                                    metric=["auroc", "accuracy", "f1"]), tmp_path)
    data = load_task_data(spec, source, limit_eval=150)
    result, logits = evaluate_session(ModuleSession(tiny_model(2, "single_label_classification")), tokenizer, data,
                                      32, MeasureConfig(bootstrap_resamples=200), seed=0)
    log_probs = np.asarray(result["predictions"])
    assert result["metric_name"] == "auroc" and log_probs.dtype == np.float64 and log_probs.shape == (150, 2)
    np.testing.assert_allclose(log_probs, torch.log_softmax(torch.from_numpy(logits).double(), -1).numpy())
    labels = np.asarray(result["labels"])
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert result["metrics"]["auroc"] == pytest.approx(METRICS["auroc"](log_probs[:, 1] - log_probs[:, 0], labels))
    assert result["positive_label"] == {"id": 1, "name": "spam"}          # what f1 counts as positive


# ----------------------------------------------------------------------------------------------- distillation


def signal(**values) -> TeacherSignal:
    return TeacherSignal.model_validate(values)


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())


def test_multi_label_distillation_loss_by_hand() -> None:
    student = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, -1.0]])
    teacher = torch.tensor([[3.0, -1.0, -0.5], [1.0, 2.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bce = F.binary_cross_entropy_with_logits(student, labels)
    # teachers.py calls it with regression=False and no kind: the float multi-hot labels say multi-label
    assert float(distillation_loss(student, None, labels, signal(alpha=0.0), False)) == pytest.approx(float(bce))
    t = 2.0
    p, q = torch.sigmoid(teacher / t), torch.sigmoid(student / t)
    expected = 0.6 * t * t * bernoulli_kl(p, q).mean() + 0.4 * bce
    loss = distillation_loss(student, teacher, labels, signal(temperature=t, alpha=0.6), False)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_loss(student, teacher, labels, signal(alpha=0.6), False, kind="multi_label")) == \
        pytest.approx(float(distillation_loss(student, teacher, labels, signal(alpha=0.6), False)))
    reverse = distillation_loss(student, teacher, labels, signal(temperature=t, alpha=1.0, divergence="reverse_kl"),
                                False)
    assert float(reverse) == pytest.approx(float(t * t * bernoulli_kl(q, p).mean()), rel=1e-5)
    same = distillation_loss(student, student, labels, signal(alpha=1.0, divergence="js"), False)
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_multi_label_black_box_and_several_teachers() -> None:
    student = torch.tensor([[0.2, -0.4], [1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[2.0, -3.0], [-1.0, 0.5]])
    black_box = distillation_loss(student, teacher, labels, signal(alpha=1.0, targets="teacher_labels"), False)
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(black_box.detach()) == pytest.approx(float(F.binary_cross_entropy_with_logits(student.detach(),
                                                                                                hard)))
    # two teachers: their softened per-label probabilities are averaged
    both = torch.stack([teacher, -teacher], dim=1)
    t = 1.5
    mean = (torch.sigmoid(teacher / t) + torch.sigmoid(-teacher / t)) / 2
    loss = distillation_loss(student, both, labels, signal(temperature=t, alpha=1.0), False)
    expected = t * t * bernoulli_kl(mean, torch.sigmoid(student.detach() / t)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_single_label_and_regression_losses_are_unchanged_by_kind() -> None:
    student, teacher, labels = torch.tensor([[0.5, -0.5]]), torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    assert float(distillation_loss(student, teacher, labels, signal(), False, kind="single_label")) == \
        pytest.approx(float(distillation_loss(student, teacher, labels, signal(), False)))
    log_s, log_t = F.log_softmax(student / 2.0, -1), F.log_softmax(teacher / 2.0, -1)
    expected = 0.5 * 4.0 * divergence("forward_kl", log_s, log_t) + 0.5 * F.cross_entropy(student, labels)
    assert float(distillation_loss(student, teacher, labels, signal(), False)) == pytest.approx(float(expected))
    regression = distillation_loss(torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.tensor([3.0]), signal(), True)
    assert float(regression) == pytest.approx(0.5 * 1.0 + 0.5 * 4.0)
