"""Analysed rows as one flat record per measurement, with stable column names (``results.csv``).

The columns are documented in the README ("results.csv columns"); ``COLUMNS`` fixes their
order. Row keys a plugin adds that are plain values follow, sorted; nested values that a
table cannot hold (predictions, labels, lineage, every timed call) stay in ``results.jsonl``.
"""

from __future__ import annotations

import json

import pandas as pd

LATENCY_FIELDS = ("p10", "p50", "p90", "p99", "mean", "std", "min", "cold")
SEED_FIELDS = ("run", "data", "teacher", "bootstrap")
# A causal LM's decoding (row["generation"]), as gen_<field>; ttft_ms is the median time to the first token.
GENERATION_FIELDS = ("prompt_tokens", "new_tokens", "ttft_ms", "time_per_token_ms", "tokens_per_s",
                     "decode_tokens_per_s", "peak_rss_bytes", "kv_cache_bytes")
# A natural-length shape's lengths (row["natural_lengths"]), as natural_<field>: over the timed calls, each row's
# real tokens, each call's padded width, and the share of computed positions that were padding.
NATURAL_FIELDS = ("row_tokens_p50", "row_tokens_p90", "padded_width_p50", "padded_width_p90", "padding_share")

COLUMNS = (
    "run_id",
    "cell_id",
    "task",
    "pipeline",
    "backend_label",
    "fp32_backend_label",
    "backend",
    "device",
    "profile",
    "precision",
    "threads",
    "batch_size",
    "seq_len",
    "status",
    "reason",
    "metric_name",
    "metric",
    "metric_ci95_low",
    "metric_ci95_high",
    "is_baseline",
    "baseline_metric",
    "metric_delta",
    "metric_delta_ci95_low",
    "metric_delta_ci95_high",
    "metric_delta_significant",
    "metric_kept",
    "keeps_99",
    "keeps_99_9",
    "gates_withheld",
    "compared_on",
    "per_token_withheld",
    "bits_per_byte",
    "bits_per_byte_ci95_low",
    "bits_per_byte_ci95_high",
    "baseline_bits_per_byte",
    "bits_per_byte_delta",
    "bits_per_byte_delta_ci95_low",
    "bits_per_byte_delta_ci95_high",
    "bits_per_byte_delta_significant",
    "size_bytes",
    "size_ratio",
    "params",
    "nonzero_params",
    *(f"latency_{name}_ms" for name in LATENCY_FIELDS),
    "latency_n",
    "throughput_per_s",
    "speedup_p50",
    "speedup_ci95_low",
    "speedup_ci95_high",
    "speedup_significant",
    "speedup_interleaved",
    "speedup_overlap",
    "speedup_vs_reference_p50",
    "speedup_vs_reference_ci95_low",
    "speedup_vs_reference_ci95_high",
    "speedup_vs_reference_significant",
    "speedup_vs_reference_source",
    "reference_backend_label",
    *(f"natural_{name}" for name in NATURAL_FIELDS),
    "gflop_per_batch",
    "achieved_gflops",
    "peak_gflops",
    "peak_dtype",
    "pct_of_peak",
    *(f"gen_{name}" for name in GENERATION_FIELDS),
    "gen_speedup",
    "gen_speedup_ci95_low",
    "gen_speedup_ci95_high",
    "gen_speedup_vs_reference",
    "gen_speedup_vs_reference_ci95_low",
    "gen_speedup_vs_reference_ci95_high",
    "bandwidth_gbs",
    "bytes_per_step",
    "roof_tokens_per_s",
    "pct_of_bandwidth_roof",
    "h2d_copy_ms",
    "gpu_peak_allocated_bytes",
    "gpu_peak_reserved_bytes",
    "parity_max_abs_diff",
    "eval_split",
    "eval_rows",
    *(f"seed_{name}" for name in SEED_FIELDS),
    "artifact",
    "artifact_hash",
    "artifact_format",
    "artifact_precision",
    "measured_in_run",
    "steps",
)
NESTED = ("predictions", "labels", "lineage", "latency_ms", "latency_samples_ms", "metrics", "metric_ci95", "steps",
          "seeds", "roofline_peak", "flops", "gpu_memory", "speedup", "speedup_vs_reference", "measured_at",
          "generation", "zero_shot", "memory_bandwidth", "natural_lengths")


def flat_record(row: dict) -> dict:
    """One analysed row (``analysis.analyse``) as flat columns."""
    out = {key: value for key, value in row.items() if key not in NESTED and not isinstance(value, (dict, list))}
    latency = row.get("latency_ms") or {}
    for name in LATENCY_FIELDS:
        out[f"latency_{name}_ms"] = latency.get(name)
    out["latency_n"] = latency.get("n")
    out["metric_ci95_low"], out["metric_ci95_high"] = row.get("metric_ci95") or (None, None)
    for name, value in (row.get("metrics") or {}).items():
        out[f"metric_{name.replace('/', '_')}"] = value
    seeds = row.get("seeds") or {}
    for name in SEED_FIELDS:
        out[f"seed_{name}"] = seeds.get(name)
    memory = row.get("gpu_memory") or {}
    out["gpu_peak_allocated_bytes"], out["gpu_peak_reserved_bytes"] = (
        memory.get("allocated_bytes"),
        memory.get("reserved_bytes"),
    )
    out["steps"] = json.dumps(row.get("steps") or [])
    generation = row.get("generation") or {}
    for name in GENERATION_FIELDS:
        value = generation.get(name)
        out[f"gen_{name}"] = value.get("p50") if isinstance(value, dict) else value
    for column, key in (("gen_speedup", "speedup"), ("gen_speedup_vs_reference", "speedup_vs_reference")):
        speedup = generation.get(key) or {}
        out[column] = speedup.get("ratio")
        out[f"{column}_ci95_low"], out[f"{column}_ci95_high"] = speedup.get("ci95") or (None, None)
    lengths = row.get("natural_lengths") or {}
    for name in NATURAL_FIELDS:
        spread, _, percentile = name.rpartition("_")
        out[f"natural_{name}"] = (lengths.get(name) if name == "padding_share"
                                  else (lengths.get(spread) or {}).get(percentile))
    for task, scores in (row.get("zero_shot") or {}).items():
        out[f"zero_shot_{task}_ci95_low"], out[f"zero_shot_{task}_ci95_high"] = scores.get("ci95") or (None, None)
    return out


def tidy_frame(analysed: list[dict]) -> pd.DataFrame:
    """The documented columns in order, then each task's extra metrics and any plugin keys (sorted)."""
    records = [flat_record(row) for row in analysed]
    present = dict.fromkeys(key for record in records for key in record)
    extra = sorted(key for key in present if key not in COLUMNS)
    return pd.DataFrame(records, columns=[*COLUMNS, *extra])
