"""The shared training loop: seeded, budgeted, evaluating."""

from __future__ import annotations

import torch

from compbench.config.training import TrainConfig
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.loop import fit


def _train(tiny_artifact, rows, **config):
    model = tiny_artifact.torch_model()
    scores = []
    result = fit(model, tiny_artifact.tokenizer(), rows, TrainConfig(batch_size=8, max_seq_len=32, **config),
                 evaluate=lambda m: scores.append(len(scores)) or float(len(scores)))
    return model, result


def test_fit_is_seeded_budgeted_and_evaluates_each_epoch(tiny_artifact, glue_data):
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=40, limit_eval=8)
    rows = encode_rows(tiny_artifact.tokenizer(), data.task, data.train, 32)
    first, result = _train(tiny_artifact, rows, epochs=2, seed=7)
    second, _ = _train(tiny_artifact, rows, epochs=2, seed=7)
    other, _ = _train(tiny_artifact, rows, epochs=2, seed=8)
    weights = lambda m: m.classifier.weight.detach()  # noqa: E731
    assert torch.equal(weights(first), weights(second))
    assert not torch.equal(weights(first), weights(other))
    assert result.steps == 10 and [h["epoch"] for h in result.history] == [1, 2]
    _, capped = _train(tiny_artifact, rows, epochs=3, max_steps=7)
    assert capped.steps == 7 and len(capped.history) == 2
