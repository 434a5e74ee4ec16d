"""Causal LMs through suite -> cells -> rows -> reports: a tiny random Llama end to end through the command line
(plumbing), the analysis of lower-is-better metrics and of decoding against the bandwidth roof (numbers checked
by hand), and the real SmolLM2 whose reported perplexity must equal one computed with plain transformers."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from compbench.measurement.language import kv_cache_bytes, prompt_batch
from compbench.results.analysis import analyse, decode_roofline, front_score, kept_share
from compbench.results.rows import read_rows
from compbench.tasks.glue import get_task
from compbench.tasks.metrics import paired_bootstrap_perplexity_delta
from compbench.tasks.sources import detect_layout

SST2_ZERO_SHOT = {"task": "sst2", "template": "Review: {sentence}\nSentiment:", "choices": [" negative", " positive"]}


def lm_suite(model: Path, data: Path, **extra) -> dict:
    return {
        "name": "lm", "model": str(model),
        "tasks": [{"name": "glue-text", "corpus": "glue", "window": 128,
                   "zero_shot": [{**SST2_ZERO_SHOT, "limit": 40}]}],
        "data": {"dir": str(data), "limit_eval": 24, "limit_train": 24},
        "pipelines": [{"name": "pruned", "steps": [{"compressor": "prune",
                                                    "params": {"method": "magnitude", "amount": 0.5}}]}],
        "backends": [{"name": "torch", "threads": 1}],
        "measure": {"batch_sizes": [1, 2], "seq_lens": [16], "warmup_iters": 1, "min_iters": 3, "min_seconds": 0.05,
                    "max_seconds": 1, "generation": {"new_tokens": 6, "min_calls": 2, "min_seconds": 0.05,
                                                     "max_seconds": 2}},
        **extra,
    }


def compbench(*args, cwd: Path, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m compbench`` as a user runs it, offline, with its own cache (a module-scoped fixture runs before
    the autouse fixture that sets these for a test)."""
    env = {**os.environ, "COMPBENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "COMPBENCH_BUSY_CORES": "1000"}
    env.pop("COMPBENCH_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "compbench", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tiny_lm_run(tmp_path_factory, tiny_causal_lm, glue_data):
    folder = tmp_path_factory.mktemp("lm-run")
    suite = folder / "lm.yaml"
    # the reference backend at other threads than the cells' (1): every model, the teacher too, is timed against it
    config = lm_suite(tiny_causal_lm.path, glue_data, reference_backend={"name": "torch", "threads": 2})
    # SST-2 again, as a multiple-choice file of the user's: answers in a list column without the label words'
    # leading space (the default target_delimiter " " puts it back), the gold answer as text
    rows = detect_layout(glue_data / "glue").load_split(get_task("sst2"), "validation")
    answers = [choice.strip() for choice in SST2_ZERO_SHOT["choices"]]
    pd.DataFrame({"sentence": rows["sentence"], "options": [answers] * len(rows),
                  "answer": [answers[int(v)] for v in rows["label"]]}).to_json(
        folder / "sst2-mc.jsonl", orient="records", lines=True)
    config["tasks"][0]["zero_shot"].append({"name": "sst2-mc", "data": "sst2-mc.jsonl", "label": "answer",
                                            "template": SST2_ZERO_SHOT["template"], "choices_column": "options"})
    suite.write_text(yaml.safe_dump(config))
    done = compbench("run", suite, "--results-dir", folder / "results", "--run-id", "first", "--no-progress",
                     cwd=folder, cache=folder / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, read_rows(folder / "results" / "first" / "results.jsonl"), done


def test_a_causal_lm_suite_writes_quality_and_decoding_rows(tiny_lm_run, tiny_causal_lm, glue_data):
    from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data

    folder, rows, _ = tiny_lm_run
    model = tiny_causal_lm.torch_model()       # parameters() yields the tied table once; the buffer: rotary frequencies
    tiny_lm_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    suite = yaml.safe_load((folder / "lm.yaml").read_text())
    data = load_language_modeling_data(LanguageModelingConfig.model_validate(suite["tasks"][0]),
                                       detect_layout(glue_data / "glue"), folder, limit_train=24, limit_eval=24)
    documents = data.eval["validation"]["text"].tolist()
    assert sorted((r["pipeline"], r["batch_size"]) for r in rows) == [("baseline", 1), ("baseline", 2),
                                                                       ("pruned", 1), ("pruned", 2)]
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert row["metric_name"] == "perplexity" and row["artifact_kind"] == "causal-lm"
        low, high = row["metric_ci95"]
        assert low <= row["metric"] <= high
        # the per-document sums and counts the row keeps give back its perplexity
        assert math.isclose(math.exp(sum(row["predictions"]) / sum(row["labels"])), row["metric"], rel_tol=1e-5)
        assert row["eval_rows"] == 24 == len(row["labels"]) and row["eval_tokens"] == sum(row["labels"])
        # bits per byte from the same sums, over each document's scored bytes (all but the text of the first token
        # of each 128-token window: by hand on real SmolLM2 in the slow test below); its interval holds it
        bpb = row["metrics"]["bits_per_byte"]
        assert math.isclose(sum(row["predictions"]) / math.log(2) / sum(row["document_bytes"]), bpb, rel_tol=1e-5)
        assert all(0 < scored <= len(text.encode()) for scored, text in zip(row["document_bytes"], documents))
        assert row["eval_bytes"] == sum(row["document_bytes"])
        assert row["bits_per_byte_ci95"][0] <= bpb <= row["bits_per_byte_ci95"][1]
        zero_shot = row["zero_shot"]["sst2"]      # --limit-eval (24) caps its limit (40) too
        assert zero_shot["rows"] == 24 and row["metrics"]["zero_shot_sst2"] == zero_shot["accuracy"]
        # the same rows as a multiple-choice file score exactly as the GLUE task does (another path, same numbers)
        assert row["zero_shot"]["sst2-mc"]["predictions"] == zero_shot["predictions"]
        assert row["zero_shot"]["sst2-mc"]["labels"] == zero_shot["labels"]
        assert (row["zero_shot"]["sst2-mc"]["target_delimiter"], zero_shot["target_delimiter"]) == (" ", "")
        g = row["generation"]
        assert (g["batch_size"], g["prompt_tokens"], g["new_tokens"]) == (row["batch_size"], 16, 6)
        assert g["ttft_ms"]["p50"] > 0 and g["time_per_token_ms"] > 0 and g["tokens_per_s"] > 0
        assert g["peak_rss_bytes"] >= g["rss_before_bytes"] > 0
        # 2 layers x 2 KV heads x 16 dims x (16 + 6) positions x batch, keys and values, fp32
        assert g["kv_cache_bytes"] == 2 * 2 * 2 * 16 * 22 * row["batch_size"] * 4
        assert row["memory_bandwidth"]["gbs"] > 0
        # a step reads every fp32 parameter (the tied table whole, for the head; the pruned model runs dense) and
        # the cache at its mean length over the steps (16 + 6 / 2 positions)
        step = g["step_bytes"]
        assert step["weights"] == tiny_lm_bytes and step["embedding_rows"] == 0 and step["kv_dtype"] == "fp32"
        assert step["kv_cache"] == 2 * 2 * 2 * 16 * (16 + 3) * row["batch_size"] * 4
        assert step["total"] == step["weights"] + step["kv_cache"]
        # forward passes and decoding, each timed in one loop with the teacher on the reference backend
        for versus in (row["speedup_vs_reference"], g["speedup_vs_reference"]):
            assert versus["source"] == "timed" and versus["reference"] == "torch:cpu:default:t2"
            assert versus["ratio"] > 0 and versus["ci95"][0] <= versus["ratio"] <= versus["ci95"][1]
        assert g["speedup_vs_reference"]["reference_full_ms"] > 0
        assert len(g["speedup_vs_reference"]["reference_samples_ms"]) == g["speedup_vs_reference"]["pairs"]
    pruned = [r for r in rows if r["pipeline"] == "pruned"]
    assert all("speedup" in r["generation"] for r in pruned)       # decoding timed interleaved with the teacher
    assert all(r["generation"]["speedup"]["pairs"] == r["generation"]["speedup_vs_reference"]["pairs"]
               for r in pruned)                                     # in the same rounds
    assert all(r["nonzero_params"] < r["params"] for r in pruned)


def test_the_report_shows_perplexity_zero_shot_and_decoding(tiny_lm_run):
    folder, _, done = tiny_lm_run
    report = (folder / "results" / "first" / "report.md").read_text()
    assert "### perplexity and size" in report and "zero-shot sst2 (95% CI)" in report
    assert "### Decoding" in report and "% of bandwidth roof" in report
    assert "speed-up vs reference (95% CI)" in report and "vs teacher, same backend (95% CI)" in report
    assert "as given (a causal LM is measured as it is)" in report
    assert (folder / "results" / "first" / "plots" / "glue-text-metric-vs-decoding.png").is_file()
    assert "generate 1 x 16 + 6" in done.stdout + done.stderr
    csv = (folder / "results" / "first" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"gen_ttft_ms", "gen_time_per_token_ms", "gen_tokens_per_s", "pct_of_bandwidth_roof", "bytes_per_step",
            "metric_zero_shot_sst2"} <= set(csv)


def test_a_second_run_serves_the_cells_from_the_cache(tiny_lm_run):
    folder, rows, _ = tiny_lm_run
    again = compbench("run", folder / "lm.yaml", "--results-dir", folder / "results", "--run-id", "second",
                      "--no-progress", cwd=folder, cache=folder / "cache")
    assert again.returncode == 0, again.stdout + again.stderr
    served = read_rows(folder / "results" / "second" / "results.jsonl")
    assert {r["measured_in_run"] for r in served} == {"first"}
    assert sorted(r["metric"] for r in served) == sorted(r["metric"] for r in rows)


@pytest.mark.parametrize("entry, expected", [
    ({"zero_shot": [{**SST2_ZERO_SHOT, "choices": [" no"]}]}, "tasks[0].zero_shot[0].choices"),
    ({"zero_shot": [{**SST2_ZERO_SHOT, "choices": [" a", " b", " c"]}]}, "3 choices, but sst2 has 2 labels"),
    ({"zero_shot": [{**SST2_ZERO_SHOT, "task": "stsb"}]}, "give a GLUE classification task"),
    ({"zero_shot": [{**SST2_ZERO_SHOT, "template": "{review}"}]}, "cannot be filled from sst2's columns"),
    ({"corpus": "no-such-file.txt"}, "corpus file"),
    ({"stride": 999}, "stride 999 exceeds window 128"),
])
def test_a_mistaken_language_task_is_one_line_and_no_run_folder(tmp_path, tiny_causal_lm, glue_data, entry,
                                                                expected):
    suite = lm_suite(tiny_causal_lm.path, glue_data)
    suite["tasks"][0].update(entry)
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(suite))
    done = compbench("run", path, "--results-dir", tmp_path / "results", cwd=tmp_path, cache=tmp_path / "cache",
                     timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_classifier_given_for_a_language_task_is_refused(tmp_path, tiny_artifact, glue_data):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(lm_suite(tiny_artifact.path, glue_data)))
    done = compbench("run", path, "--results-dir", tmp_path / "results", cwd=tmp_path, cache=tmp_path / "cache",
                     timeout=120)
    assert done.returncode == 2 and "scores a causal language model, but" in done.stderr
    assert "BertForSequenceClassification" in done.stderr


# ---- analysis of lower-is-better metrics and decoding, by hand ---------------------------------------------------

def test_perplexity_keeps_its_direction_in_shares_and_fronts():
    assert kept_share("perplexity", 11.0, 10.0) == pytest.approx(10 / 11)     # 10% worse keeps 91%
    assert kept_share("accuracy", 0.8, 0.9) == pytest.approx(0.8 / 0.9)
    assert front_score({"metric_name": "perplexity", "metric": 12.0}) == -12.0
    assert front_score({"metric_name": "accuracy", "metric": 0.7}) == 0.7


def test_a_perplexity_delta_is_paired_over_documents(tmp_path):
    from result_rows import row

    rng = np.random.default_rng(0)
    counts = rng.integers(20, 60, size=150)
    base = counts * rng.uniform(2.0, 3.0, size=150)
    worse = base + counts * 0.05
    baseline = row("baseline", 0, 10.0, metric_name="perplexity", metric=float(np.exp(base.sum() / counts.sum())),
                   predictions=base.tolist(), labels=counts.tolist())
    model = row("int8", 0, 8.0, metric_name="perplexity", metric=float(np.exp(worse.sum() / counts.sum())),
                predictions=worse.tolist(), labels=counts.tolist())
    analysed = {r["pipeline"]: r for r in analyse([baseline, model])}["int8"]
    value, interval = paired_bootstrap_perplexity_delta(base, counts, worse, counts, n_resamples=1000, seed=0)
    assert value > 0 and analysed["metric_delta"] == pytest.approx(value)
    assert (analysed["metric_delta_ci95_low"], analysed["metric_delta_ci95_high"]) == pytest.approx(
        (interval.low, interval.high))
    assert analysed["metric_kept"] == pytest.approx(baseline["metric"] / model["metric"])
    assert analysed["metric_kept"] < 1
    assert analysed["keeps_99"] is (analysed["metric_kept"] >= 0.99)


def test_decoding_is_read_against_the_bytes_a_step_reads_not_the_file_size():
    """The roof divides by what the cell counted a step reads (an int4 graph: 84 MB of weights, one 2,304-byte
    embedding row per sequence, a bf16 cache), not by the deployed files (199 MB: the fp32 table it only looks
    up); a row without that count (measured before it was kept) gets no roof."""
    from transformers import LlamaConfig

    from compbench.backends.base import StepReads
    from compbench.measurement.language import step_bytes

    config = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    reads = StepReads(84_000_000, 576 * 4, "bf16", 2.0, "by hand")
    step = step_bytes(reads, config, 2, 96, 32)
    kv = 30 * 3 * 64 * 2 * 2 * 2 * (96 + 16)        # layers x heads x dims x (k, v) x bf16 x batch x mean length
    assert step == {"weights": 84_000_000, "embedding_rows": 2 * 576 * 4, "kv_cache": kv,
                    "total": 84_000_000 + 2 * 576 * 4 + kv, "kv_dtype": "bf16", "kv_bytes_per_value": 2.0,
                    "counted": "by hand"}
    generation = {"batch_size": 2, "prompt_tokens": 96, "new_tokens": 32, "decode_tokens_per_s": 20.0,
                  "step_bytes": step}
    row = {"generation": generation, "memory_bandwidth": {"gbs": 10.0}, "size_bytes": 199_000_000}
    out = decode_roofline(row)
    assert out["bytes_per_step"] == step["total"]
    assert out["roof_tokens_per_s"] == pytest.approx(2 * 10e9 / step["total"])
    assert out["pct_of_bandwidth_roof"] == pytest.approx(100 * 20.0 / (2 * 10e9 / step["total"]))
    del generation["step_bytes"]
    assert decode_roofline(row)["roof_tokens_per_s"] is None and decode_roofline(row)["bandwidth_gbs"] == 10.0


def test_a_model_with_another_tokenizer_is_compared_on_bits_per_byte():
    """A sequence-level student whose tokenizer cuts the same 150 documents into a third more tokens: 5% more NLL
    in all, so 5% more bits per byte (worse), yet its per-token perplexity is lower (each token is easier). Its
    perplexity delta is withheld (before: -19.9 read as a gain, both gates passed); the delta, the share kept,
    the gates and recommend are on bits per byte, checked by hand (the paired bootstrap written out here)."""
    from compbench.results.recommend import MaxDrop, candidates, render
    from compbench.results.report import RunReport

    from result_rows import row

    rng = np.random.default_rng(1)
    n = 150
    sizes = rng.integers(200, 600, n)                    # bytes of each document's scored text (the teacher's)
    teacher_nll = sizes * rng.uniform(0.8, 1.0, n)       # nats
    student_nll, student_bytes = teacher_nll * 1.05, sizes - 1     # its unscored first token is one byte shorter

    def lm(pipeline: str, nll, tokens, n_bytes, size: int) -> dict:
        perplexity, bpb = math.exp(nll.sum() / tokens.sum()), nll.sum() / math.log(2) / n_bytes.sum()
        return row(pipeline, 0, 10.0, size=size, metric_name="perplexity", metric=perplexity,
                   metrics={"perplexity": perplexity, "bits_per_byte": bpb}, bits_per_byte_ci95=[bpb - 0.1, bpb + 0.1],
                   predictions=nll.tolist(), labels=tokens.tolist(), document_bytes=n_bytes.tolist(),
                   eval_tokens=int(tokens.sum()), eval_bytes=int(n_bytes.sum()))
    teacher = lm("baseline", teacher_nll, sizes // 4, sizes, 90_000_000)
    student = lm("seqkd", student_nll, sizes // 3, student_bytes, 30_000_000)
    same = lm("int8", teacher_nll * 1.001, sizes // 4, sizes, 40_000_000)        # the teacher's tokenizer
    assert student["metric"] < teacher["metric"]                                  # "better" per token
    analysed = {r["pipeline"]: r for r in analyse([teacher, student, same])}
    seqkd = analysed["seqkd"]
    assert seqkd["metric_delta"] is None and seqkd["metric_delta_ci95_low"] is None
    assert seqkd["compared_on"] == "bits_per_byte" and "another tokenizer" in seqkd["per_token_withheld"]
    by_hand = student_nll.sum() / student_bytes.sum() / math.log(2) - teacher_nll.sum() / sizes.sum() / math.log(2)
    assert seqkd["bits_per_byte_delta"] == pytest.approx(by_hand) and by_hand > 0
    draws, draw = [], np.random.default_rng(0)             # documents resampled, both models on the same draw
    for _ in range(1000):
        idx = draw.integers(0, n, n)
        draws.append((student_nll[idx].sum() / student_bytes[idx].sum() - teacher_nll[idx].sum() / sizes[idx].sum())
                     / math.log(2))
    assert (seqkd["bits_per_byte_delta_ci95_low"], seqkd["bits_per_byte_delta_ci95_high"]) == pytest.approx(
        tuple(np.percentile(draws, [2.5, 97.5])))
    assert seqkd["bits_per_byte_delta_significant"]
    teacher_bpb, student_bpb = teacher["metrics"]["bits_per_byte"], student["metrics"]["bits_per_byte"]
    assert seqkd["metric_kept"] == pytest.approx(teacher_bpb / student_bpb)
    assert seqkd["keeps_99"] is False and front_score(seqkd) == -student_bpb
    int8 = analysed["int8"]                # one tokenizer: its perplexity delta stays, bits per byte beside it
    assert int8["compared_on"] == "perplexity" and int8["per_token_withheld"] is None
    assert int8["metric_delta"] > 0 and int8["bits_per_byte_delta"] > 0
    report = RunReport([teacher, student, same]).markdown()
    assert "— (another tokenizer: see bits/byte)" in report and "Δ bits/byte vs teacher (95% CI)" in report
    assert (f"`seqkd`: {sum(sizes // 3)} tokens scored where the teacher scored {sum(sizes // 4)} on the same "
            "documents (another tokenizer): per-token perplexities are in different units; its delta, share kept and "
            "gates are on bits per byte.") in report
    found = candidates([teacher, student, same], MaxDrop.parse("2%"), objective="size")
    assert [c.row["pipeline"] for c in found["sst2"]["choices"]] == ["int8", "baseline"]     # seqkd: +5% bits
    assert all(c.quality.name == "bits_per_byte" for c in found["sst2"]["choices"])
    assert "of bits per byte: a model here has another tokenizer" in render(found, MaxDrop.parse("2%"), False)


def test_kv_cache_and_prompts_by_hand(tiny_causal_lm, glue_data):
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    # SmolLM2-135M: 30 layers x 3 KV heads x 64 dims, keys and values, fp32, one sequence of 100 tokens
    assert kv_cache_bytes(config, 1, 100) == 30 * 3 * 64 * 2 * 100 * 4
    tokenizer = tiny_causal_lm.tokenizer()
    documents = ["the cat sat on the mat", "a dog barked twice", "rain fell all night long"]
    batch = prompt_batch(tokenizer, documents, 3, 7, seed=0)
    assert batch["input_ids"].shape == (3, 7) and batch["attention_mask"].all()
    stream = [t for d in documents for t in tokenizer(d, add_special_tokens=False).input_ids]
    assert set(batch["input_ids"].ravel()) <= set(stream)      # real corpus tokens, no padding or specials


# ---- the real model ----------------------------------------------------------------------------------------------

# long: about 2 min (the real SmolLM2 through a run and plain transformers); the default run keeps the tiny LM's
@pytest.mark.long
def test_smollm2_perplexity_reported_equals_plain_transformers(tmp_path, smollm2_folder, glue_data, cache_root):
    """The baseline's perplexity in the row equals one computed here with plain transformers (each document one
    window, the model's own loss), within 0.5%."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    suite = lm_suite("smollm2-135m", glue_data, pipelines=[])
    suite["tasks"][0]["zero_shot"][0]["limit"] = 60
    suite["tasks"][0]["window"] = 2048
    suite["data"]["limit_eval"] = 40
    suite["measure"]["seq_lens"] = [32]
    suite["measure"]["batch_sizes"] = [1]
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(suite))
    done = subprocess.run([sys.executable, "-m", "compbench", "run", path, "--results-dir", tmp_path / "results",
                           "--run-id", "smol", "--cache-dir", cache_root, "--no-progress"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = read_rows(tmp_path / "results" / "smol" / "results.jsonl")
    from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data
    from compbench.tasks.sources import detect_layout

    config = LanguageModelingConfig.model_validate(suite["tasks"][0])
    data = load_language_modeling_data(config, detect_layout(glue_data / "glue"), tmp_path, limit_train=24,
                                       limit_eval=40)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    total_nll, total_tokens, scored_bytes = 0.0, 0, 0
    with torch.no_grad():
        for text in data.eval["validation"]["text"]:
            ids = tokenizer(text, return_tensors="pt").input_ids
            assert ids.shape[1] <= 2048                     # one window each: the recipe reduces to the model's loss
            loss = model(ids, labels=ids).loss
            total_nll += float(loss) * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
            # the scored tokens' text: the document less its first token (SmolLM2 puts no <bos> first)
            scored_bytes += len(tokenizer.decode(ids[0, 1:], clean_up_tokenization_spaces=False).encode())
    expected = math.exp(total_nll / total_tokens)
    assert row["metric"] == pytest.approx(expected, rel=0.005)
    assert row["eval_tokens"] == total_tokens
    bits_per_byte = total_nll / math.log(2) / scored_bytes
    print(f"\nSmolLM2 on {row['eval_rows']} documents: perplexity {row['metric']:.3f} (by hand {expected:.3f}), "
          f"{row['metrics']['bits_per_byte']:.4f} bits per byte {row['bits_per_byte_ci95']} (by hand "
          f"{bits_per_byte:.4f}, {scored_bytes} bytes)")
    assert row["eval_bytes"] == scored_bytes
    assert row["metrics"]["bits_per_byte"] == pytest.approx(bits_per_byte, rel=0.005)
    assert 10 < row["metric"] < 200                         # a real model on real English
    assert row["zero_shot"]["sst2"]["accuracy"] > 0.6       # measured 0.79 on all 872 rows
