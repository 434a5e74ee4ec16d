"""Measuring a causal LM through the session that is timed: quality (corpus perplexity, zero-shot accuracy) and
decoding (time to first token, time per output token, tokens/s, peak memory, KV-cache size).

Quality: perplexity with its document-bootstrap interval, and bits per byte (the same NLL in bits over the UTF-8
bytes of the scored tokens' text: the unit two tokenizers share) with its own; the row keeps each document's NLL
sum (``predictions``), scored-token count (``labels``) and scored bytes (``document_bytes``) so a delta against the
baseline gets a paired interval (on bits per byte where the two tokenized the text differently), and each
zero-shot task's predictions, labels and accuracy interval.

Decoding, per shape (batch size x prompt tokens): prompts are real corpus tokens, unpadded; every ``generate``
call is greedy and makes exactly ``new_tokens`` tokens. Calls that make one token (the time to first token:
prefill plus one step) alternate with calls that make all of them (which goes first turns, ABBA-like), so the
time per output token is ``(full - first) / (new_tokens - 1)`` from medians of the same window; the warm-up's
calls are no sample of either (their first is each statistic's ``cold``). Against the teacher the full calls are
timed interleaved (ABBA) with the teacher's, and the speed-up is their median ratio with a paired interval, as
for forward latency; with the teacher on the suite's reference backend as well, its full calls join the same
rounds (every order in turn) and give ``speedup_vs_reference``. Peak memory is measured first, with the model
alone loaded: the process's resident set (CPU) sampled during one full call, or the allocator's peak (CUDA); the
KV cache is computed from the config (what the cache holds at the last token) at the dtype the session keeps it in.
The bytes a decoding step reads (``step_bytes``, the bandwidth roof's denominator) are the session's weights at
their runtime dtypes, one row of each lookup table per sequence, and the KV cache at its mean length over the steps.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from compbench.backends.base import Clock, Session, StepReads
from compbench.config.measure import GenerationConfig, MeasureConfig
from compbench.measurement.timing import interleaved_calls, interleaved_speedup, latency_stats, pin_torch_threads
from compbench.tasks.causal_lm import ZERO_SHOT_SPLIT, LanguageModelingConfig
from compbench.tasks.data import TaskData
from compbench.tasks.encoding import Batch
from compbench.tasks.language_modeling import device_of, perplexity, zero_shot_scores
from compbench.tasks.metrics import bootstrap_ci

RSS_SAMPLE_SECONDS = 0.005
QUALITY_BATCH = 8          # windows (or zero-shot inputs) per forward pass


def lm_tokenizer(artifact, session: Session | None = None):
    """The tokenizer ``session`` runs on (its engine's own, else the artifact's), with a pad token (its end-of-text)
    where it has none: batches are padded."""
    own = session.text_tokenizer() if session is not None else None
    tokenizer = own if own is not None else artifact.tokenizer()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def language_quality(session: Session, tokenizer, data: TaskData, task: LanguageModelingConfig,
                     config: MeasureConfig, seed: int) -> dict:
    """The row fields of quality: perplexity (the headline) with its interval, per-document sums for paired
    deltas, and each zero-shot task's accuracy (``zero_shot_<task>``) with its interval."""
    model = session.language_model()
    documents = data.eval["validation"]["text"].tolist()
    losses = perplexity(model, tokenizer, documents, max_length=task.window, stride=task.effective_stride,
                        batch_size=QUALITY_BATCH)
    sums, counts = losses.unit_sums("document")
    interval = losses.interval("document", n_resamples=config.bootstrap_resamples, seed=seed)
    metrics = {"perplexity": losses.perplexity, "nll_per_token": losses.mean_nll,
               "bits_per_byte": losses.bits_per_byte}
    scored_bytes = losses.unit_bytes("document")
    per_byte = {} if scored_bytes is None else {
        "bits_per_byte_ci95": losses.interval("document", metric="bits_per_byte",
                                              n_resamples=config.bootstrap_resamples, seed=seed).as_list(),
        "eval_bytes": int(scored_bytes.sum()), "document_bytes": [int(b) for b in scored_bytes]}
    zero_shot = {}
    for entry in task.zero_shot:
        rows = data.eval[ZERO_SHOT_SPLIT + entry.key]
        scores = zero_shot_scores(model, tokenizer, entry.prompts_of(rows), entry.choices_of(rows),
                                  batch_size=QUALITY_BATCH, target_delimiter=entry.delimiter)
        labels = rows["label"].to_numpy(dtype=np.int64)
        predictions = scores.predictions
        accuracy = float(np.mean(predictions == labels))
        zero_shot[entry.key] = {
            "accuracy": accuracy,
            "ci95": bootstrap_ci("accuracy", predictions, labels, n_resamples=config.bootstrap_resamples,
                                 seed=seed).as_list(),
            "accuracy_norm": float(np.mean(scores.normalized_predictions == labels)),
            "majority": float(np.bincount(labels).max() / len(labels)),   # a data task: always the same index
            "choices": scores.logliks.shape[1], "target_delimiter": entry.delimiter,
            "rows": int(len(labels)), "predictions": predictions.tolist(), "labels": labels.tolist(),
        }
        metrics[entry.metric_name] = accuracy
    return {"metric_name": "perplexity", "metric": losses.perplexity, "metric_ci95": interval.as_list(),
            "metrics": metrics, "eval_split": "validation", "eval_rows": len(documents),
            "eval_tokens": losses.n_tokens, "perplexity_window": {"max_length": task.window,
                                                                  "stride": task.effective_stride},
            "predictions": [round(float(v), 6) for v in sums], "labels": [int(c) for c in counts], **per_byte,
            "zero_shot": zero_shot}


def prompt_batch(tokenizer, documents: list[str], batch_size: int, prompt_tokens: int, seed: int) -> Batch:
    """``batch_size`` prompts of exactly ``prompt_tokens`` real tokens each, unpadded: the corpus's documents in a
    seeded order, tokenized and concatenated into one stream, cut into consecutive pieces (the stream repeats if
    the corpus is short)."""
    order = np.random.default_rng(seed).permutation(len(documents))
    need = batch_size * prompt_tokens
    stream: list[int] = []
    while len(stream) < need:
        for index in order:
            stream.extend(tokenizer(documents[index], add_special_tokens=False).input_ids)
            if len(stream) >= need:
                break
        if not stream:
            raise ValueError("the corpus gives no tokens to build prompts from")
    ids = np.asarray(stream[:need], dtype=np.int64).reshape(batch_size, prompt_tokens)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


@dataclass
class GenerateCall:
    """One ``generate`` call making exactly ``new_tokens`` tokens greedily from a prepared prompt batch."""

    model: Any
    inputs: dict
    new_tokens: int
    pad_token_id: int | None
    clock: Clock
    threads: int | None = None     # torch's threads to set first (see timing.Call)

    @classmethod
    def of(cls, session: Session, tokenizer, batch: Batch, new_tokens: int,
           threads: int | None = None) -> "GenerateCall":
        import torch

        model = session.language_model()
        device = device_of(model)
        inputs = {key: torch.from_numpy(value).to(device) for key, value in batch.items()}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(model, inputs, new_tokens, pad, session.clock(), threads)

    def generate(self):
        import torch

        with torch.inference_mode():
            return self.model.generate(**self.inputs, max_new_tokens=self.new_tokens,
                                       min_new_tokens=self.new_tokens, do_sample=False,
                                       pad_token_id=self.pad_token_id)

    def time_ms(self) -> float:
        pin_torch_threads(self.threads)
        return self.clock.time_ms(self.generate)

    def first_token(self) -> "GenerateCall":
        return GenerateCall(self.model, self.inputs, 1, self.pad_token_id, self.clock, self.threads)


class _Alternating:
    """A call that makes one first-token and one full generation (one ``time_ms`` = one pair, returning the full
    call's ms), so both medians come from one window. The first ``warmup`` pairs are the loop's warm-up: kept apart
    (``warmup_ms``), never samples. Within a pair the order turns every second pair (first-full, first-full,
    full-first, full-first): neither call always goes first, and against a teacher timed in ABBA rounds each of
    the two follows the teacher's call as often as the other (turning every pair would leave the first-token call
    always after one of the model's own)."""

    def __init__(self, call: GenerateCall, warmup: int) -> None:
        self.full, self.first = call, call.first_token()
        self.warmup = warmup
        self.first_ms: list[float] = []                                 # the timed pairs' first-token calls
        self.warmup_ms: dict[str, list[float]] = {"first": [], "full": []}
        self.pairs = 0

    def time_ms(self) -> float:
        timed = self.pairs - self.warmup            # the index among timed pairs; negative in the warm-up
        self.pairs += 1
        if timed % 4 < 2:
            first, full = self.first.time_ms(), self.full.time_ms()
        else:
            full, first = self.full.time_ms(), self.first.time_ms()
        if timed < 0:
            self.warmup_ms["first"].append(first)
            self.warmup_ms["full"].append(full)
        else:
            self.first_ms.append(first)
        return full

    def cold(self, kind: str, samples: list[float]) -> float:
        """The first call of ``kind`` in the loop: the warm-up's (the first timed one without a warm-up)."""
        return (self.warmup_ms[kind] or samples)[0]


@contextmanager
def peak_rss() -> Iterator[dict]:
    """The process's peak resident set (bytes) while the block runs, sampled every few ms (a thread)."""
    import psutil

    process = psutil.Process()
    result = {"before_bytes": process.memory_info().rss, "peak_bytes": process.memory_info().rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(RSS_SAMPLE_SECONDS):
            result["peak_bytes"] = max(result["peak_bytes"], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result["peak_bytes"] = max(result["peak_bytes"], process.memory_info().rss)


def kv_cache_bytes(config, batch_size: int, tokens: int, bytes_per_value: float = 4) -> int | None:
    """Bytes the key/value cache holds for ``tokens`` positions of ``batch_size`` sequences: keys and values of
    every layer, ``num_key_value_heads x head_dim`` each (grouped-query attention keeps fewer heads)."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return int(2 * layers * kv_heads * head_dim * tokens * batch_size * bytes_per_value)


def step_bytes(reads: StepReads, config, batch_size: int, prompt_tokens: int, new_tokens: int) -> dict:
    """The bytes one decoding step of ``batch_size`` sequences reads, with its parts: ``weights`` (read whole),
    ``embedding_rows`` (one row of each lookup table per sequence), ``kv_cache`` (its mean size over the steps: the
    step making token i of ``new_tokens`` attends to ``prompt_tokens + i`` positions, i = 1 .. new - 1), ``total``;
    and the KV cache's dtype and what was counted."""
    per_position = kv_cache_bytes(config, batch_size, 1, reads.kv_bytes_per_value)
    kv = per_position * (prompt_tokens + new_tokens / 2) if per_position is not None else None
    rows = reads.row_bytes * batch_size
    return {"weights": reads.weight_bytes, "embedding_rows": rows, "kv_cache": kv,
            "total": reads.weight_bytes + rows + (kv or 0), "kv_dtype": reads.kv_dtype,
            "kv_bytes_per_value": reads.kv_bytes_per_value, "counted": reads.counted}


def decoding_memory(session: Session, tokenizer, batch: Batch, config: GenerationConfig,
                    reads: StepReads | None = None) -> dict:
    """Memory of one full ``generate`` call with this model alone loaded (before the teacher it is timed against
    is): the process's peak resident set (and the allocator's peak on CUDA), and the KV cache at the last token (at
    the dtype ``reads`` says the session keeps it in; fp32 without), and with ``reads`` the bytes a decoding step
    reads (``step_bytes``). The call also checks that ``generate`` makes exactly ``new_tokens`` tokens (the same
    work every call)."""
    call = GenerateCall.of(session, tokenizer, batch, config.new_tokens)
    batch_size, prompt_tokens = batch["input_ids"].shape
    session.reset_memory_peak()
    with peak_rss() as memory:
        produced = call.generate()
    if produced.shape[1] != prompt_tokens + config.new_tokens:     # min_new_tokens not honoured: not the same work
        raise RuntimeError(f"generate made {produced.shape[1] - prompt_tokens} tokens, not {config.new_tokens}")
    model_config = getattr(call.model, "config", None)
    out = {"peak_rss_bytes": int(memory["peak_bytes"]), "rss_before_bytes": int(memory["before_bytes"]),
           "kv_cache_bytes": kv_cache_bytes(model_config, batch_size, prompt_tokens + config.new_tokens,
                                            reads.kv_bytes_per_value if reads else 4)}
    if reads is not None:
        out["step_bytes"] = step_bytes(reads, model_config, batch_size, prompt_tokens, config.new_tokens)
    device_memory = session.memory_peak()
    if device_memory is not None:
        out["gpu_memory"] = device_memory
    return out


def generation_timing(session: Session, tokenizer, batch: Batch, reference: GenerateCall | None,
                      config: GenerationConfig, measure: MeasureConfig, seed: int,
                      served: GenerateCall | None = None, threads: int | None = None) -> dict:
    """The timing part of a shape's ``generation`` field (see the module docstring); ``served`` is the teacher on
    the reference backend (its ratio: ``speedup_vs_reference``, which the caller names), ``threads`` the torch
    threads to pin before the model's calls (where the reference runs at others)."""
    call = GenerateCall.of(session, tokenizer, batch, config.new_tokens, threads)
    batch_size, prompt_tokens = batch["input_ids"].shape
    timing = measure.model_copy(update={"min_iters": config.min_calls, "min_seconds": config.min_seconds,
                                        "max_seconds": config.max_seconds, "warmup_iters": 1})
    alternating = _Alternating(call, timing.warmup_iters)
    references = [partner for partner in (reference, served) if partner is not None]
    full_ms, references_ms = interleaved_calls(alternating, references, timing)
    reference_ms = references_ms[0] if reference is not None else []
    served_ms = references_ms[-1] if served is not None else []
    first_ms = alternating.first_ms
    first = float(np.median(first_ms))
    full = float(np.median(full_ms))
    per_token = max(full - first, 0.0) / (config.new_tokens - 1)
    out = {
        "batch_size": int(batch_size), "prompt_tokens": int(prompt_tokens), "new_tokens": config.new_tokens,
        "ttft_ms": latency_stats(np.asarray(first_ms), alternating.cold("first", first_ms)),
        "full_ms": latency_stats(np.asarray(full_ms), alternating.cold("full", full_ms)),
        "time_per_token_ms": per_token,
        "tokens_per_s": batch_size * config.new_tokens * 1000.0 / full,
        "decode_tokens_per_s": batch_size * 1000.0 / per_token if per_token > 0 else None,
    }
    if reference_ms:
        out["speedup"] = interleaved_speedup(full_ms, reference_ms, measure, seed, "reference_full_ms")
    if served_ms:
        out["speedup_vs_reference"] = {**interleaved_speedup(full_ms, served_ms, measure, seed, "reference_full_ms"),
                                       "reference_samples_ms": [round(value, 4) for value in served_ms]}
    return out
