"""Distillation: the loss against hand-computed values, student construction, and the compressor end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.compressors.distill import DistillParams
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.tasks.data import load_task_data
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.kd import distillation_loss, divergence
from compbench.training.layer_matching import LayerMatcher, checked_layer_map, masked_mse, uniform_layer_map
from compbench.training.students import StudentSpec, build_student, layer_subset

STUDENT = {"layers": [0]}


def params(**values) -> DistillParams:
    return DistillParams.model_validate({"student": STUDENT, **values})


def test_forward_kl_with_temperature_squared_matches_hand_computation():
    student, teacher, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([0])
    t = 2.0
    p = torch.softmax(teacher / t, -1)[0]
    q = torch.softmax(student / t, -1)[0]
    kl = float((p * (p.log() - q.log())).sum())
    ce = float(F.cross_entropy(student, labels))
    loss = distillation_loss(student, teacher, labels, params(temperature=t, alpha=0.7), regression=False)
    assert float(loss) == pytest.approx(0.7 * t * t * kl + 0.3 * ce, rel=1e-6)


def test_divergences_are_what_they_say():
    log_s = torch.log_softmax(torch.tensor([[0.2, 1.0, -0.5]]), -1)
    log_t = torch.log_softmax(torch.tensor([[2.0, 0.1, 0.0]]), -1)
    s, t = log_s.exp()[0], log_t.exp()[0]
    assert float(divergence("forward_kl", log_s, log_t)) == pytest.approx(
        float((t * (t.log() - s.log())).sum()), rel=1e-6)
    assert float(divergence("reverse_kl", log_s, log_t)) == pytest.approx(
        float((s * (s.log() - t.log())).sum()), rel=1e-6)
    m = (s + t) / 2
    js = 0.5 * (t * (t / m).log()).sum() + 0.5 * (s * (s / m).log()).sum()
    assert float(divergence("js", log_s, log_t)) == pytest.approx(float(js), rel=1e-6)
    assert 0 < float(js) < math.log(2)
    assert float(divergence("js", log_s, log_s)) == pytest.approx(0.0, abs=1e-7)


def test_hard_label_black_box_and_regression_losses():
    student, teacher, labels = (torch.tensor([[0.5, -0.5], [0.0, 2.0]]), torch.tensor([[-1.0, 1.0], [3.0, 0.0]]),
                                torch.tensor([0, 1]))
    assert float(distillation_loss(student, None, labels, params(alpha=0.0), False)) == pytest.approx(
        float(F.cross_entropy(student, labels)))
    black_box = distillation_loss(student, teacher, labels, params(alpha=1.0, targets="teacher_labels"), False)
    assert float(black_box) == pytest.approx(float(F.cross_entropy(student, torch.tensor([1, 0]))))
    # the black-box loss is the same whatever the teacher's confidence: only its labels count
    confident = distillation_loss(student, teacher * 10, labels, params(alpha=1.0, targets="teacher_labels"), False)
    assert float(confident) == pytest.approx(float(black_box))
    reg = distillation_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [2.0]]), torch.tensor([0.0, 4.0]),
                            params(alpha=0.5), True)
    assert float(reg) == pytest.approx(0.5 * (0.25 / 2) + 0.5 * (1.0 + 4.0) / 2)


def test_student_spec_needs_exactly_one_kind():
    with pytest.raises(ValidationError, match="exactly one"):
        StudentSpec.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        StudentSpec.model_validate({"layers": [0, 1], "num_layers": 2})
    with pytest.raises(ValidationError, match="distinct"):
        StudentSpec.model_validate({"layers": [1, 1]})
    with pytest.raises(ValidationError):
        params(alpha=1.5)


def test_layer_subset_copies_the_chosen_layers_exactly(tiny_artifact):
    teacher = tiny_artifact.torch_model()
    student = layer_subset(teacher, [1])
    assert student.config.num_hidden_layers == 1
    for name, value in student.bert.encoder.layer[0].state_dict().items():
        assert torch.equal(value, teacher.bert.encoder.layer[1].state_dict()[name])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    with pytest.raises(ValueError, match="0..1"):
        layer_subset(teacher, [0, 5])


def test_narrower_student_is_truncated_or_random(tiny_artifact):
    narrow = StudentSpec(num_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=1)
    student, _ = build_student(tiny_artifact, narrow, seed=0)
    teacher = tiny_artifact.torch_model()
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1
    assert torch.equal(student.bert.embeddings.word_embeddings.weight,
                       teacher.bert.embeddings.word_embeddings.weight[:, :16])
    random, _ = build_student(tiny_artifact, narrow.model_copy(update={"init": "random"}), seed=0)
    assert not torch.equal(random.bert.embeddings.word_embeddings.weight,
                           student.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="multiple"):
        build_student(tiny_artifact, StudentSpec(hidden_size=30, num_attention_heads=4), seed=0)


def test_distill_builds_trains_and_records_the_student(responsive, glue_data, tmp_path):
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=32)
    builder = PipelineBuild(responsive, data, ArtifactStore(tmp_path), seed=0, device="cpu",
                            reporter=Reporter(enabled=False), max_seq_len=32)
    spec = {"num_layers": 1, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 1, "init": "random"}
    train = {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "seed": 3}
    step = StepConfig(compressor="distill", params={"student": spec, "alpha": 1.0, "temperature": 1.0,
                                                    "train": train, "keep_best": False})
    student = builder.run(PipelineConfig(name="kd", steps=[step]))
    assert student.format == "hf" and student.precision == "fp32"
    record = student.lineage[-1]
    assert record["step"] == "distill" and record["steps"] == 8 and len(record["history"]) == 2
    assert student.size_bytes() < responsive.size_bytes() / 1.5
    # that a student really learns from the teacher's signal is checked on the real MiniLM in
    # test_end_to_end (alpha 1: no labels at all); this tiny model's outputs are too flat for it


def test_several_teachers_are_averaged_after_softening():
    student, labels, t = torch.tensor([[0.3, -0.2]]), torch.tensor([0]), 2.0
    first, second = torch.tensor([[2.0, 0.0]]), torch.tensor([[-1.0, 1.0]])
    mixture = (torch.softmax(first / t, -1) + torch.softmax(second / t, -1))[0] / 2
    q = torch.softmax(student / t, -1)[0]
    kl = float((mixture * (mixture.log() - q.log())).sum())
    both = torch.stack([first, second], dim=1)                      # (batch, teachers, classes)
    loss = distillation_loss(student, both, labels, params(temperature=t, alpha=1.0), regression=False)
    assert float(loss) == pytest.approx(t * t * kl, rel=1e-5)      # float32
    # one teacher given as (batch, 1, classes) is the same as (batch, classes)
    single = distillation_loss(student, first, labels, params(temperature=t, alpha=0.6), regression=False)
    assert float(single) == pytest.approx(
        float(distillation_loss(student, first[:, None], labels, params(temperature=t, alpha=0.6), False)))
    # black-box takes the label of the averaged distribution: 0.88/0.12 and 0.27/0.73 -> class 0
    black_box = distillation_loss(student, both, labels, params(alpha=1.0, targets="teacher_labels"), False)
    assert float(black_box) == pytest.approx(float(F.cross_entropy(student, torch.tensor([0]))))
    reg = distillation_loss(torch.tensor([[1.0]]), torch.tensor([[[0.0], [4.0]]]), torch.tensor([0.0]),
                            params(alpha=1.0), True)
    assert float(reg) == pytest.approx(1.0)                           # the teachers' mean is 2


def test_layer_maps_default_to_uniform_and_are_checked():
    assert uniform_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert uniform_layer_map(4, 6) == {0: 1, 1: 2, 2: 4, 3: 5}   # 1.5, 3, 4.5, 6 rounded half up; the last layers meet
    assert checked_layer_map({0: 0, 2: 4}, 3, 6) == {0: 0, 2: 4}
    with pytest.raises(ValueError, match=r"student layers \[3\] do not exist: the student has layers 0..2"):
        checked_layer_map({3: 5}, 3, 6)
    with pytest.raises(ValueError, match=r"teacher layers \[6\] do not exist: the teacher has layers 0..5"):
        checked_layer_map({0: 6}, 3, 6)


def test_masked_mse_ignores_padding():
    predicted, target = torch.tensor([[1.0, 5.0]]), torch.tensor([[0.0, 0.0]])
    assert float(masked_mse(predicted, target, torch.tensor([[1.0, 0.0]]))) == pytest.approx(1.0)


def test_layer_matching_is_zero_between_identical_models_and_projects_when_widths_differ(tiny_artifact):
    teacher = tiny_artifact.torch_model()
    twin = tiny_artifact.torch_model()
    tokenizer = tiny_artifact.tokenizer()
    batch = {k: torch.tensor(v) for k, v in tokenizer(["a fine film", "dull"], padding=True).items()}
    matcher = LayerMatcher(teacher, twin, {0: 0, 1: 1}, hidden_weight=1.0, attention_weight=1.0)
    assert len(list(matcher.parameters())) == 0                      # same width: no projection to learn
    outputs = twin(**batch, **matcher.output_flags)
    assert outputs.attentions is not None and float(matcher(outputs, batch).detach()) == pytest.approx(0.0, abs=1e-10)
    # a student with the last layer only, matched to the teacher's first: no longer zero
    shallow = layer_subset(teacher, [1])
    matcher = LayerMatcher(teacher, shallow, {0: 0}, hidden_weight=1.0, attention_weight=0.5)
    assert float(matcher(shallow(**batch, **matcher.output_flags), batch).detach()) > 0
    narrow, _ = build_student(tiny_artifact, StudentSpec(num_layers=1, hidden_size=16, intermediate_size=32,
                                                         num_attention_heads=2), seed=0)
    matcher = LayerMatcher(teacher, narrow, None, hidden_weight=1.0, attention_weight=0.0)
    assert matcher.layer_map == {0: 1} and matcher.projections["0"].weight.shape == (32, 16)
    loss = matcher(narrow(**batch, **matcher.output_flags), batch)
    loss.backward()
    assert (matcher.projections["0"].weight.grad is not None
            and narrow.bert.encoder.layer[0].output.dense.weight.grad is not None)
    one_head, _ = build_student(tiny_artifact, StudentSpec(num_layers=1, num_attention_heads=1), seed=0)
    with pytest.raises(ValueError, match="equal head counts; student has 1, teacher 2"):
        LayerMatcher(teacher, one_head, None, hidden_weight=0.0, attention_weight=1.0)


def test_matching_and_teacher_parameters_are_checked():
    with pytest.raises(ValidationError, match="alpha 0"):
        params(alpha=0.0, teacher_seeds=[7])
    with pytest.raises(ValidationError, match="no layer matching is on"):
        params(layer_map={0: 1})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        params(hidden_weight=-1.0)
    with pytest.raises(ValidationError, match="greater than 0"):
        params(temperature=0.0)


def distill_build(responsive, glue_data, store_root, retrain_teacher=None) -> PipelineBuild:
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=32)
    return PipelineBuild(responsive, data, ArtifactStore(store_root), seed=0, device="cpu",
                         reporter=Reporter(enabled=False), max_seq_len=32, retrain_teacher=retrain_teacher)


def test_distill_with_layer_matching_and_a_second_teacher(responsive, tiny_artifact, glue_data, tmp_path):
    asked = []

    def retrain_teacher(seed):
        asked.append(seed)
        return tiny_artifact                                          # stands in for the teacher fine-tuned with `seed`

    builder = distill_build(responsive, glue_data, tmp_path, retrain_teacher)
    train = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "seed": 3}
    step = StepConfig(compressor="distill", params={"student": {"layers": [1]}, "alpha": 0.5, "teacher_seeds": [7],
                                                    "hidden_weight": 1.0, "attention_weight": 1.0, "train": train})
    student = builder.run(PipelineConfig(name="kd-matched", steps=[step]))
    record = student.lineage[-1]
    assert asked == [7] and record["teachers"] == 2 and record["layer_map"] == [[0, 1]] and record["steps"] == 4
    assert student.torch_model().config.num_hidden_layers == 1
    without = distill_build(responsive, glue_data, tmp_path / "other")
    with pytest.raises(UnsupportedError, match="further teachers"):
        without.run(PipelineConfig(name="kd-two", steps=[step]))
