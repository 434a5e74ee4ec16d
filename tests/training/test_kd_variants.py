"""The distillation variants against values computed by hand (numpy, from the papers' definitions) on fixed
logits and embeddings: generalized JSD and skew KL divergences, the teacher's top-k folding, and the relation
losses (RKD distance and angle, similarity-preserving)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from compbench.compressors.distill import DistillParams
from compbench.config.training import TrainConfig
from compbench.tasks.encoding import encode_rows, encode_text_chunks, iter_batches
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.kd import TeacherSignal, divergence, token_distillation_loss, top_k_folded
from compbench.training.layer_matching import LayerMatcher
from compbench.training.loop import fit
from compbench.training.relational import pooled, relational_loss
from compbench.training.students import StudentSpec, build_student

STUDENT = np.array([[1.0, 0.2, -0.5, 0.0], [0.3, 2.0, 0.1, -1.0]])
TEACHER = np.array([[2.0, -0.3, 0.1, 0.4], [-0.2, 1.5, 0.9, 0.0]])


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of sum p log(p / q)."""
    return float(np.mean(np.sum(p * np.log(p / q), axis=-1)))


def logs(x: np.ndarray) -> torch.Tensor:
    return F.log_softmax(torch.tensor(x, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_by_hand(beta):
    p, q = softmax(TEACHER), softmax(STUDENT)
    m = beta * p + (1 - beta) * q
    expected = beta * kl(p, m) + (1 - beta) * kl(q, m)
    assert float(divergence("js", logs(STUDENT), logs(TEACHER), beta=beta)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("skew", [0.1, 0.3])
def test_skew_kl_and_skew_reverse_kl_by_hand(skew):
    p, q = softmax(TEACHER), softmax(STUDENT)
    assert float(divergence("skew_kl", logs(STUDENT), logs(TEACHER), skew=skew)) == pytest.approx(
        kl(p, skew * p + (1 - skew) * q), rel=1e-9)
    assert float(divergence("skew_reverse_kl", logs(STUDENT), logs(TEACHER), skew=skew)) == pytest.approx(
        kl(q, skew * q + (1 - skew) * p), rel=1e-9)
    # a skew KL is bounded where the plain KL is not: log(1 / skew)
    assert float(divergence("skew_kl", logs(STUDENT), logs(TEACHER), skew=skew)) < np.log(1 / skew)


def test_top_k_folding_by_hand():
    k = 2
    p, q = softmax(TEACHER), softmax(STUDENT)
    folded_t, folded_s = top_k_folded(logs(TEACHER), logs(STUDENT), k)
    for row in range(len(p)):
        top = np.argsort(-p[row])[:k]
        want_t = np.append(p[row, top], 1 - p[row, top].sum())
        want_s = np.append(q[row, top], 1 - q[row, top].sum())
        np.testing.assert_allclose(folded_t[row].exp().numpy(), want_t, rtol=1e-12)
        np.testing.assert_allclose(folded_s[row].exp().numpy(), want_s, rtol=1e-12)
    # k = vocabulary: the fold adds an empty outcome and the divergence is the full one
    whole_t, whole_s = top_k_folded(logs(TEACHER), logs(STUDENT), 4)
    assert float(divergence("forward_kl", whole_s, whole_t)) == pytest.approx(kl(p, q), rel=1e-6)


def test_top_k_token_loss_is_the_folded_forward_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 5, 50), torch.randn(1, 5, 50) * 3
    labels = torch.randint(0, 50, (1, 5))
    signal = TeacherSignal(alpha=1.0, temperature=1.0, top_k=8)
    got = token_distillation_loss(student, teacher, labels, signal)
    p, q = softmax(teacher[0, :-1].double().numpy()), softmax(student[0, :-1].double().numpy())
    top = np.argsort(-p, axis=1)[:, :8]
    fold = lambda d: np.concatenate([np.take_along_axis(d, top, 1),      # noqa: E731
                                     1 - np.take_along_axis(d, top, 1).sum(1, keepdims=True)], axis=1)
    assert float(got) == pytest.approx(kl(fold(p), fold(q)), rel=1e-4)
    assert float(got) < float(token_distillation_loss(student, teacher, labels, TeacherSignal(alpha=1.0,
                                                                                             temperature=1.0)))


EMBED_S = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 2.0, 0.0], [0.5, -1.0, 1.0]])
EMBED_T = np.array([[1.0, 0.0, 0.0, 2.0, 1.0], [0.0, 3.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0],
                    [-2.0, 0.0, 1.0, 0.5, 0.0]])


def huber(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5)))


def rkd_distance_by_hand(s: np.ndarray, t: np.ndarray) -> float:
    def normalised(x):
        d = np.array([[np.linalg.norm(a - b) for b in x] for a in x])
        return d / d[~np.eye(len(x), dtype=bool)].mean()
    return huber(normalised(s), normalised(t))


def rkd_angle_by_hand(s: np.ndarray, t: np.ndarray) -> float:
    def angles(x):
        n = len(x)
        out = np.zeros((n, n, n))
        for i, j, k in itertools.product(range(n), repeat=3):
            u, v = x[i] - x[j], x[k] - x[j]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            out[j, i, k] = 0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
        return out
    return huber(angles(s), angles(t))


def test_rkd_distance_angle_and_similarity_by_hand():
    s, t = torch.tensor(EMBED_S), torch.tensor(EMBED_T)
    assert float(relational_loss("rkd_distance", s, t)) == pytest.approx(rkd_distance_by_hand(EMBED_S, EMBED_T),
                                                                          rel=1e-6)
    assert float(relational_loss("rkd_angle", s, t)) == pytest.approx(rkd_angle_by_hand(EMBED_S, EMBED_T), rel=1e-6)
    assert float(relational_loss("rkd", s, t)) == pytest.approx(
        rkd_distance_by_hand(EMBED_S, EMBED_T) + 2 * rkd_angle_by_hand(EMBED_S, EMBED_T), rel=1e-6)
    gram = lambda x: (x @ x.T) / np.linalg.norm(x @ x.T, axis=1, keepdims=True)    # noqa: E731
    want = np.sum((gram(EMBED_S) - gram(EMBED_T)) ** 2) / 16
    assert float(relational_loss("similarity", s, t)) == pytest.approx(want, rel=1e-6)
    # relations are what is compared: a scaled, rotated copy of the teacher loses nothing under RKD
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    copy = torch.tensor(3.0 * EMBED_T @ rotation)
    assert float(relational_loss("rkd", copy, t)) == pytest.approx(0.0, abs=1e-10)


def test_relation_gradients_reach_only_the_student():
    s = torch.tensor(EMBED_S, requires_grad=True)
    t = torch.tensor(EMBED_T, requires_grad=True)
    relational_loss("rkd", s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_pooled_averages_real_tokens_only():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert pooled(hidden, mask).tolist() == [[1.5, 2.5, 3.5]]


@pytest.mark.parametrize("params, expected", [
    ({"relation": "similarity"}, "set relational_weight > 0"),
    ({"divergence": "skew_kl", "skew": 1.0}, "skew"),
    ({"divergence": "js", "beta": 0.0}, "beta"),
    ({"top_k": 0}, "top_k"),
])
def test_distill_parameters_say_what_is_wrong(params, expected):
    with pytest.raises(ValidationError, match=expected):
        DistillParams(student={"layers": [0]}, **params)


# ---- short real runs: training with the variant lowers it ---------------------------------------------------------


def held_out_batch(tokenizer, rows) -> dict[str, torch.Tensor]:
    (batch, _), = iter_batches(tokenizer, rows, len(rows))
    return {k: torch.from_numpy(v) for k, v in batch.items()}


@pytest.mark.parametrize("relation", ["rkd", "similarity"])
def test_a_relational_student_of_real_minilm_learns_its_relations(relation, minilm_path, glue_data):
    """The real MiniLM (its pretrained sentence encoder) teaches a 3-layer subset of itself, on real SST-2 rows,
    with the relation loss alone: on rows it never trained on the loss falls."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    teacher = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    student = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    student.bert.encoder.layer = torch.nn.ModuleList([student.bert.encoder.layer[i] for i in (0, 5)])
    student.config.num_hidden_layers = 2
    with torch.no_grad():      # start the student far from the teacher: its kept layers perturbed
        for parameter in student.bert.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    task = get_task("sst2")
    frame = ParquetFolderSource(glue_data / "glue").load_split(task, "train").head(192)
    train_rows, eval_rows = (encode_rows(tokenizer, task, part, 32) for part in (frame.iloc[:160], frame.iloc[160:]))
    matcher = LayerMatcher(teacher, student, None, 0.0, 0.0, relational_weight=1.0, relation=relation)

    def loss_fn(module, batch):
        batch.pop("labels", None)
        return matcher(module(**batch, **matcher.output_flags), batch)

    def held_out_loss() -> float:
        batch = held_out_batch(tokenizer, eval_rows)
        with torch.no_grad():
            return float(loss_fn(student.eval(), dict(batch)))

    before = held_out_loss()
    fit(student, tokenizer, train_rows, TrainConfig(epochs=2, batch_size=16, learning_rate=1e-4, seed=0),
        loss_fn=loss_fn)
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("signal", [      # (js and skew_reverse_kl share the code paths; checked by hand above)
    {"divergence": "reverse_kl"},
    {"divergence": "skew_kl", "skew": 0.1, "top_k": 16},
])
def test_a_token_level_student_lowers_its_divergence(signal, tiny_causal_lm, glue_data):
    """A one-layer subset of the tiny causal LM learns its teacher's next-token distributions on real GLUE text
    with each divergence: on text it never trained on, the divergence falls."""
    torch.manual_seed(0)
    teacher = tiny_causal_lm.torch_model().eval()
    student = build_student(tiny_causal_lm, StudentSpec(layers=[0]), seed=0)[0]
    tokenizer = tiny_causal_lm.tokenizer()
    text = ParquetFolderSource(glue_data / "glue").load_split(get_task("rte"), "train")["sentence1"].head(60)
    train_rows = encode_text_chunks(tokenizer, text.iloc[:45].tolist(), 32)
    eval_rows = encode_text_chunks(tokenizer, text.iloc[45:].tolist(), 32)
    params = TeacherSignal(alpha=1.0, temperature=1.0, **signal)

    def loss_fn(module, batch):
        labels = batch.pop("labels")
        with torch.no_grad():
            target = teacher(**batch).logits
        return token_distillation_loss(module(**batch).logits, target, labels, params)

    def held_out_loss() -> float:
        batch = held_out_batch(tokenizer, eval_rows)
        batch["labels"] = torch.from_numpy(eval_rows.labels)
        with torch.no_grad():
            return float(loss_fn(student.eval(), batch))

    before = held_out_loss()
    fit(student, tokenizer, train_rows, TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, seed=0),
        loss_fn=loss_fn)
    assert held_out_loss() < 0.8 * before
