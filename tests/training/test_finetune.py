"""Teacher fine-tuning on the real MiniLM: seeded end to end, cached by what it depends on."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from compbench.cache.store import ArtifactStore
from compbench.common.progress import Reporter
from compbench.config.training import TeacherConfig
from compbench.models.references import resolve_model
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.finetune import finetuned_teacher, teacher_key

CONFIG = TeacherConfig(epochs=1, max_steps=3, batch_size=8, max_seq_len=32, seed=5)


@pytest.fixture(scope="module")
def data(glue_data):
    return load_task_data(get_task("rte"), ParquetFolderSource(glue_data / "glue"), limit_train=24, limit_eval=16)


def test_same_seed_gives_identical_teachers(data, tmp_path):
    base = resolve_model("minilm-l6")
    quiet = Reporter(enabled=False)
    first = finetuned_teacher(base, data, CONFIG, ArtifactStore(tmp_path / "a"), quiet)
    second = finetuned_teacher(base, data, CONFIG, ArtifactStore(tmp_path / "b"), quiet)
    a, b = load_file(first.path / "model.safetensors"), load_file(second.path / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert first.lineage[0]["steps"] == 3 and first.num_labels == 2 and first.task == "rte"


def test_cache_key_follows_training_inputs_only(data, glue_data):
    base = resolve_model("minilm-l6")
    key = teacher_key(base, data, CONFIG)
    assert teacher_key(base, data, CONFIG.model_copy(update={"seed": 6})) != key
    assert teacher_key(base, data, CONFIG.model_copy(update={"max_steps": 4})) != key
    fewer_eval_rows = load_task_data(data.task, ParquetFolderSource(glue_data / "glue"), limit_train=24, limit_eval=8)
    assert teacher_key(base, fewer_eval_rows, CONFIG) == key


def test_a_given_teachers_head_must_fit_the_task():
    from transformers import BertConfig

    from compbench.tasks.glue import TaskSpec
    from compbench.training.finetune import head_problem

    task = TaskSpec("reviews", ("review",), 2, ("accuracy",), ("validation",), label_names=("negative", "positive"))
    named = BertConfig(num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    assert head_problem(named, task) is None                                    # the names, whatever their case
    assert head_problem(BertConfig(num_labels=2), task) is None                 # LABEL_0, LABEL_1: nothing to check
    swapped = BertConfig(num_labels=2, id2label={0: "positive", 1: "negative"})
    assert "are [positive, negative], task reviews's [negative, positive]" in head_problem(swapped, task)
    three = BertConfig(num_labels=3)
    assert "head has 3 outputs" in head_problem(three, task)
    assert "task reviews 2 (negative, positive)" in head_problem(three, task)
    regression = TaskSpec("score", ("a", "b"), 1, ("pearson",), ("validation",))
    assert head_problem(BertConfig(num_labels=1), regression) is None
