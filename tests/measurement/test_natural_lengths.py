"""The natural-length shape (``seq_lens: [natural]``): batches of real rows each padded to its own longest row, the
same rows in the same order for every model a cell times together, the lengths the timed calls ran recorded and
checked here by hand, and the shape carried through a cell, the cache check, the report and ``recommend``."""

from __future__ import annotations

import numpy as np
import pytest

from compbench.backends.base import Session
from compbench.cache.store import ArtifactStore
from compbench.common.errors import Failures
from compbench.common.progress import Reporter
from compbench.config.cells import expand, shapes
from compbench.config.loading import validate_suite
from compbench.config.measure import NATURAL, MeasureConfig, shape_order
from compbench.measurement.cell import CellMeasurement, served_rows_problem
from compbench.measurement.natural import call_flops, length_distribution
from compbench.measurement.timing import Call, interleaved_calls
from compbench.results.analysis import analyse
from compbench.results.recommend import _shape
from compbench.results.report import markdown_report
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import natural_batches, spread_order, texts_of
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource


@pytest.fixture(scope="module")
def sst2(glue_data):
    return load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=16, limit_eval=200,
                          seed=1)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def eval_rows(data):
    return next(iter(data.eval.values()))


def test_each_batch_is_real_rows_padded_to_its_own_longest(sst2, tokenizer):
    rows = eval_rows(sst2)
    batches = natural_batches(tokenizer, sst2.task, rows, 4, 64, seed=0, count=16)
    sentences = {tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
                 for text in texts_of(sst2.task, rows)[0]}
    widths = []
    for batch in batches:
        lengths = batch["attention_mask"].sum(axis=1)
        assert batch["input_ids"].shape == (4, lengths.max()) <= (4, 64)     # padded to the longest, no further
        for ids, length in zip(batch["input_ids"], lengths):
            assert (ids[length:] == tokenizer.pad_token_id).all()
            assert tokenizer.decode(ids[:length], skip_special_tokens=True) in sentences    # a real row, whole
        widths.append(int(lengths.max()))
    assert len(set(widths)) > 4             # the data's own lengths, not one length


def test_every_tokenizer_gets_the_same_rows_in_the_same_order(sst2, tokenizer):
    """Rows are picked by index and ordered by their characters: truncating at another length (other token widths)
    leaves the rows and their order as they were; another seed draws other rows."""
    rows = eval_rows(sst2)
    first_tokens = [b["input_ids"][:, 1:4] for b in natural_batches(tokenizer, sst2.task, rows, 3, 64, 5, 12)]
    cut_short = [b["input_ids"][:, 1:4] for b in natural_batches(tokenizer, sst2.task, rows, 3, 8, 5, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(first_tokens, cut_short))
    other_seed = [b["input_ids"][:, 1:4] for b in natural_batches(tokenizer, sst2.task, rows, 3, 64, 6, 12)]
    assert not all(np.array_equal(a, b) for a, b in zip(first_tokens, other_seed))


def test_the_first_calls_already_span_the_lengths(sst2, tokenizer):
    """The batches come in van der Corput order of their longest row's characters: the median first, then the
    quartiles, so a cell timed for 3 calls has run a short, a middle and a long batch."""
    assert spread_order(8) == [4, 2, 6, 1, 5, 3, 7, 0]
    for count in (1, 2, 3, 7, 32, 64, 100):
        assert sorted(spread_order(count)) == list(range(count))
    rows = eval_rows(sst2)
    batches = natural_batches(tokenizer, sst2.task, rows, 1, 512, seed=0, count=32)
    characters = [len(tokenizer.decode(b["input_ids"][0], skip_special_tokens=True)) for b in batches]
    assert characters[1] < characters[0] < characters[2]           # the median, then the quartiles
    ranks = np.argsort(np.argsort(characters))     # decoded text is near the raw text's length, not equal: +-2
    assert np.abs(ranks[:3] - np.array([16, 8, 24])).max() <= 2, ranks[:3]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    first = tokens[:8]                          # 8 calls: from the shortest eighth to the longest
    assert max(first) - min(first) >= 0.6 * (max(tokens) - min(tokens))


def test_the_length_distribution_by_hand():
    def batch(lengths, width):
        mask = np.zeros((len(lengths), width), dtype=np.int64)
        for i, length in enumerate(lengths):
            mask[i, :length] = 1
        return {"input_ids": mask * 7, "attention_mask": mask}

    batches = [batch([3, 5], 5), batch([9, 2], 9)]
    out = length_distribution(batches, [0, 1, 1], max_seq_len=64)
    # rows run: 3, 5, 9, 2, 9, 2 (30 tokens); padded: 5 + 9 + 9 = 23 positions x 2 rows = 46
    assert out["calls"] == 3 and out["batches"] == 2 and out["rows_per_call"] == 2 and out["truncated_at"] == 64
    assert out["row_tokens"]["min"] == 2 and out["row_tokens"]["max"] == 9
    assert out["row_tokens"]["mean"] == pytest.approx(30 / 6) and out["row_tokens"]["p50"] == pytest.approx(4.0)
    assert out["padded_width"]["p50"] == 9 and out["padded_width"]["mean"] == pytest.approx(23 / 3)
    assert out["padding_share"] == pytest.approx(1 - 30 / 46)
    # FLOPs of a call: the padded width's, times the rows, averaged over the calls that ran
    assert call_flops({5: 100, 9: 200}, batches, [0, 1, 1], 2) == round(2 * (100 + 200 + 200) / 3)
    assert call_flops({5: 100}, batches, [0, 1], 2) is None     # a width not counted: no figure rather than a wrong one


class Recording(Session):
    """A session that records which prepared batch each call ran."""

    def __init__(self) -> None:
        self.deployed_files, self.seen = [], []

    def run(self, batch):
        return batch["input_ids"]

    def prepare(self, batch):
        return int(batch["input_ids"][0, 0])

    def run_prepared(self, prepared):
        self.seen.append(prepared)


def test_interleaved_calls_run_the_same_batch_in_each_round():
    batches = [{"input_ids": np.full((1, 4), i), "attention_mask": np.ones((1, 4), dtype=np.int64)} for i in range(5)]
    model, teacher, reference = Recording(), Recording(), Recording()
    calls = [Call.of(session, batches) for session in (model, teacher, reference)]
    config = MeasureConfig(warmup_iters=3, min_iters=12, min_seconds=0, max_iters=12)
    model_ms, references_ms = interleaved_calls(calls[0], calls[1:], config)
    assert len(model_ms) == 12 and [len(r) for r in references_ms] == [12, 12]
    assert model.seen == teacher.seen == reference.seen == [i % 5 for i in range(15)]
    assert calls[0].ran[-len(model_ms):] == [i % 5 for i in range(3, 15)]     # the timed calls' batches


def test_a_natural_shape_through_a_cell_the_report_and_recommend(tiny_artifact, sst2, tmp_path):
    suite = validate_suite({
        "name": "natural", "tasks": ["sst2"], "pipelines": [{"name": "copy"}],
        "backends": [{"name": "torch", "threads": 1}, {"name": "onnxruntime", "threads": 1}],
        "teacher": {"max_seq_len": 48},
        "measure": {"batch_sizes": [2], "seq_lens": [16, NATURAL], "warmup_iters": 1, "min_iters": 6,
                    "min_seconds": 0.1, "max_seconds": 0.5}}, "natural.yaml")
    assert shapes(suite) == [(2, 16), (2, NATURAL)]
    measurement = CellMeasurement(suite, "r", ArtifactStore(tmp_path), Reporter(enabled=False), Failures())
    rows = []
    for cell in expand(suite):
        teacher = tiny_artifact if cell.pipeline.name == "copy" else None
        cell_rows = measurement.measure(cell, tiny_artifact, sst2, teacher)
        assert served_rows_problem(cell_rows, cell, shapes(suite), tiny_artifact) is None    # cacheable as measured
        rows += cell_rows
    assert all(row["status"] == "ok" for row in rows), [row["reason"] for row in rows]
    natural = [row for row in rows if row["seq_len"] == NATURAL]
    assert len(natural) == 4 and all("natural_lengths" not in row for row in rows if row["seq_len"] == 16)
    on_ort = next(r for r in natural if r["pipeline"] == "copy" and r["backend"] == "onnxruntime")
    spread = on_ort["natural_lengths"]
    assert spread["calls"] == on_ort["latency_ms"]["n"] and spread["rows_per_call"] == 2
    assert spread["truncated_at"] == 48 and spread["padded_width"]["max"] <= 48
    assert on_ort["speedup"]["pairs"] == on_ort["speedup_vs_reference"]["pairs"] == spread["calls"]
    assert on_ort["speedup_vs_reference"]["source"] == "timed"
    assert on_ort["flops"] > 0
    analysed = analyse(rows)
    natural_ort = next(r for r in analysed if r["cell_id"] == on_ort["cell_id"] and r["seq_len"] == NATURAL)
    # all the FLOPs over all the time: the mean call's FLOPs over the mean call's time
    assert natural_ort["achieved_gflops"] == pytest.approx(on_ort["flops"] / (on_ort["latency_ms"]["mean"] / 1e3) / 1e9)
    report = markdown_report(analysed, {})
    assert "### Natural lengths" in report and "2×natural" in report
    at_natural = [row for row in analysed if row["seq_len"] == NATURAL]
    assert _shape(analysed, None, NATURAL, "sst2") == (2, NATURAL)
    assert _shape(analysed, None, None, "sst2") == (2, 16)      # by default the fixed shape, as before
    assert sorted({(r["batch_size"], r["seq_len"]) for r in analysed}, key=shape_order) == [(2, 16), (2, NATURAL)]
    assert len(at_natural) == 4


def test_natural_is_a_length_for_classification_tasks_only():
    from compbench.common.errors import UsageError

    with pytest.raises(UsageError, match=r"seq_lens\[0\]: must be a whole number of tokens 8..32768 \(a classifier"):
        validate_suite({"name": "x", "tasks": ["sst2"], "measure": {"seq_lens": ["nat"]}}, "x.yaml")
    with pytest.raises(UsageError, match=r"seq_lens\[1\]: 1024 tokens: a classification task's rows are timed at "
                       r"8..512 tokens \(tasks\[0\], sst2\)"):
        validate_suite({"name": "x", "tasks": ["sst2"], "measure": {"seq_lens": [64, 1024]}}, "x.yaml")
    assert validate_suite({"name": "x", "tasks": [{"name": "wiki", "corpus": "wikitext2"}],
                           "measure": {"seq_lens": [1024]}}, "x.yaml").measure.seq_lens == [1024]
    with pytest.raises(UsageError, match=r"measure.seq_lens\[1\]: 'natural' times batches of a classification task"):
        validate_suite({"name": "x", "tasks": [{"name": "wiki", "corpus": "wikitext2"}],
                        "measure": {"seq_lens": [32, NATURAL]}}, "x.yaml")
