"""Nothing is selected on the rows that are reported: a ``keep_best`` student or recovered model picks
its epoch on a seeded slice of the training rows held out of its training, never on the evaluation
split its result rows are scored on (the bug: distill and recovery kept the epoch best on validation)."""

from __future__ import annotations

import numpy as np
import pytest

from compbench.cache.store import ArtifactStore
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.teachers import held_out

TRAIN = {"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "seed": 3}


def test_the_held_out_slice_is_seeded_disjoint_and_at_most_a_fifth():
    train, held = held_out(100, 512, seed=4)
    assert len(held) == 20 and len(train) == 80 and not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(100))
    assert np.array_equal(held, held_out(100, 512, seed=4)[1]) and not np.array_equal(held, held_out(100, 512, 5)[1])
    assert len(held_out(100, 7, seed=4)[1]) == 7


@pytest.mark.parametrize("step", [
    StepConfig(compressor="distill", params={"student": {"layers": [1]}, "alpha": 0.5, "train": TRAIN,
                                             "selection_rows": 12}),
    StepConfig(compressor="prune", params={"method": "ffn", "amount": 0.25, "importance_rows": 16,
                                           "recovery": {"train": TRAIN, "selection_rows": 12}}),
], ids=["distill", "recovery"])
def test_keep_best_selects_on_held_out_training_rows_never_on_the_evaluation_split(step, responsive, glue_data,
                                                                                   tmp_path):
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=80, limit_eval=32)
    builder = PipelineBuild(responsive, data, ArtifactStore(tmp_path), seed=6, device="cpu",
                            reporter=Reporter(enabled=False), max_seq_len=32)
    record = builder.run(PipelineConfig(name="selected", steps=[step])).lineage[-1]
    training = record.get("recovery", record)
    assert training["eval_split"] == "train (held out)" and training["best_epoch"] in (1, 2, 3)
    assert training["selected_on"]["split"] == "train" and training["selected_on"]["seed"] == 6
    assert training["selected_on"]["rows"] == 12 and training["train_rows"] == 80 - 12
    assert len(training["history"]) == 3
    _, held = held_out(80, 12, seed=6)
    selected = set(data.train.iloc[held]["sentence"])
    assert not selected & set(data.eval["validation"]["sentence"]), "selection rows must not be evaluation rows"
