"""Numbers a reader decides from, computed from result rows alone: each measurement against the
uncompressed teacher on the same backend (metric delta with a paired bootstrap interval,
accuracy gates, size ratio, speed-up with a noise flag), its speed-up against the teacher on the suite's
reference backend (measured interleaved in the row's own job), and against the machine's matmul peak.
A task whose evaluation set has fewer than ``MIN_EVAL_ROWS`` rows gets no gate: its intervals mean little.
Speed-ups are only ever the measured ratios rows carry: no figure divides the medians of two cells.

The baseline of a row is the ``baseline`` pipeline's row on the row's ``fp32_backend_label`` (a
fp16 backend compares with the fp32 teacher on that device), at the same batch size and
sequence length. Rows without one get empty relative columns.

A causal LM's rows carry bits per byte besides perplexity, with a paired delta against the teacher's. Where a model
scored the text in other tokens than the teacher (another tokenizer: a sequence-level student), per-token
perplexities are in different units: its perplexity delta is withheld (``per_token_withheld`` says why) and its
share kept and gates are read on bits per byte (``compared_on``), as is every causal LM's place on a Pareto front.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from compbench.common.statistics import TIMING_RESOLUTION, Estimate
from compbench.config.measure import NATURAL, shape_order
from compbench.config.schema import BASELINE
from compbench.tasks.metrics import higher_is_better, paired_bootstrap_delta, paired_bootstrap_nll_ratio_delta

GATES = {"keeps_99": 0.99, "keeps_99_9": 0.999}   # MLPerf-style: share of the baseline metric kept
BOOTSTRAP_RESAMPLES = 1000
# Below this many evaluation rows a task's intervals mean little (with 1 row every gate passes with [1, 1]):
# the report says so and marks no gate on it.
MIN_EVAL_ROWS = 100


def latency_range(latency: dict | None) -> tuple[float, float] | None:
    """The p10..p90 range of the timed calls (min..p90 for rows measured before p10 was kept)."""
    if not latency:
        return None
    low = latency.get("p10", latency.get("min"))
    return (low, latency["p90"]) if low is not None else None


def ranges_overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def ratio(numerator, denominator) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return float(numerator) / float(denominator)


@dataclass(frozen=True)
class Delta:
    """``metric(row) - metric(baseline)`` on the same rows with its paired 95% bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0


@lru_cache(maxsize=4096)
def _paired_delta(metric: str, baseline: tuple, predictions: tuple, labels: tuple, seed: int) -> Delta:
    if metric == "perplexity":      # predictions: each document's NLL sum; labels: its scored tokens
        return _paired_nll_delta(metric, baseline, labels, predictions, labels, seed)
    value, interval = paired_bootstrap_delta(metric, np.asarray(baseline), np.asarray(predictions),
                                             np.asarray(labels), n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return Delta(value, interval.low, interval.high)


@lru_cache(maxsize=4096)
def _paired_nll_delta(metric: str, sums_a: tuple, counts_a: tuple, sums_b: tuple, counts_b: tuple,
                      seed: int) -> Delta:
    value, interval = paired_bootstrap_nll_ratio_delta(metric, np.asarray(sums_a), np.asarray(counts_a),
                                                       np.asarray(sums_b), np.asarray(counts_b),
                                                       n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return Delta(value, interval.low, interval.high)


def change_mark(metric_name: str, change: float, significant: bool | None) -> str:
    """`` ▲`` for a change beyond the noise that is better, `` ▼`` for one that is worse, by the metric's own
    direction (perplexity going up is worse); empty within the noise."""
    if not significant:
        return ""
    better = change > 0 if higher_is_better(metric_name) else change < 0
    return " ▲" if better else " ▼"


def kept_share(metric_name: str, value: float | None, baseline: float | None) -> float | None:
    """The share of the baseline's quality a model keeps: ``value / baseline`` for a metric where higher is better,
    ``baseline / value`` where lower is (perplexity 10% higher keeps 1/1.1 = 91%)."""
    if value is None or not baseline or baseline <= 0:
        return None
    if higher_is_better(metric_name):
        return value / baseline
    return baseline / value if value > 0 else None


def frozen(values: list) -> tuple:
    """``values`` as nested tuples (a multi-label row's predictions and labels are lists of lists), hashable."""
    return tuple(frozen(v) if isinstance(v, list) else v for v in values)


def paired_delta(row: dict, baseline: dict) -> Delta | None:
    """The paired delta of ``row`` against ``baseline``, where both were scored on the same labelled rows."""
    labels, predictions, reference = row.get("labels"), row.get("predictions"), baseline.get("predictions")
    if not labels or not predictions or not reference or baseline.get("labels") != labels:
        return None
    if row["metric_name"] != baseline.get("metric_name") or len(predictions) != len(reference):
        return None
    seed = (row.get("seeds") or {}).get("bootstrap", 0)
    return _paired_delta(row["metric_name"], frozen(reference), frozen(predictions), frozen(labels), seed)


def bits_per_byte(row: dict) -> float | None:
    """A causal LM row's bits per byte (None for other rows, and rows of runs before it was measured)."""
    return (row.get("metrics") or {}).get("bits_per_byte")


def bits_per_byte_delta(row: dict, baseline: dict) -> Delta | None:
    """Bits per byte of ``row`` minus ``baseline``'s with a paired interval over documents, each model with its own
    scored bytes (two tokenizers leave out first tokens of different lengths); None without per-document sums."""
    sums, reference = row.get("predictions"), baseline.get("predictions")
    sizes, reference_sizes = row.get("document_bytes"), baseline.get("document_bytes")
    if not (sums and reference and sizes and reference_sizes) or len({len(sums), len(reference), len(sizes),
                                                                      len(reference_sizes)}) != 1:
        return None
    seed = (row.get("seeds") or {}).get("bootstrap", 0)
    return _paired_nll_delta("bits_per_byte", frozen(reference), frozen(reference_sizes), frozen(sums),
                             frozen(sizes), seed)


def tokens_differ(row: dict, baseline: dict) -> bool:
    """Whether two causal-LM rows scored their documents in different numbers of tokens (another tokenizer): their
    per-token perplexities are then in different units."""
    if row.get("metric_name") != "perplexity" or baseline.get("metric_name") != "perplexity":
        return False
    counts, reference = row.get("labels"), baseline.get("labels")
    if counts and reference:
        return counts != reference
    return row.get("eval_tokens") is not None and row.get("eval_tokens") != baseline.get("eval_tokens")


def withheld_reason(row: dict, baseline: dict) -> str:
    """Why a row's per-token delta against the teacher is withheld, and what it is compared on instead."""
    tokens, reference = (r.get("eval_tokens") or sum(r.get("labels") or []) for r in (row, baseline))
    instead = ("its delta, share kept and gates are on bits per byte" if bits_per_byte(row) is not None
               and bits_per_byte(baseline) is not None else "bits per byte, which would compare it, was not measured")
    return (f"{tokens} tokens scored where the teacher scored {reference} on the same documents (another tokenizer): "
            f"per-token perplexities are in different units; {instead}")


BITS_PER_BYTE_COLUMNS = ("bits_per_byte", "bits_per_byte_ci95_low", "bits_per_byte_ci95_high",
                         "baseline_bits_per_byte")


def bits_per_byte_columns(row: dict, baseline: dict | None) -> dict:
    """A causal LM's bits per byte, its interval, the teacher's, and the paired delta (all None where not measured)."""
    low, high = row.get("bits_per_byte_ci95") or (None, None)
    out = {**dict(zip(BITS_PER_BYTE_COLUMNS, (bits_per_byte(row), low, high, None))),
           **delta_columns(None, name="bits_per_byte_delta")}
    if baseline is None or row["status"] != "ok" or bits_per_byte(row) is None:
        return out
    out["baseline_bits_per_byte"] = bits_per_byte(baseline)
    delta = bits_per_byte_delta(row, baseline)
    if delta is not None:
        out.update(delta_columns(delta, name="bits_per_byte_delta"))
    return out


def baseline_index(rows: list[dict], pipeline: str = BASELINE) -> dict[tuple, dict]:
    """ok rows of ``pipeline`` by (task, backend label, batch size, sequence length)."""
    return {(r["task"], r["backend_label"], r["batch_size"], r["seq_len"]): r
            for r in rows if r["status"] == "ok" and r["pipeline"] == pipeline}


def baseline_of(row: dict, baselines: dict[tuple, dict]) -> dict | None:
    return baselines.get((row["task"], row["fp32_backend_label"], row["batch_size"], row["seq_len"]))


def eval_size(row: dict, labels_by_split: dict[str, list] | None = None) -> int | None:
    """How many evaluation rows ``row`` was scored on: its labels, else its predictions, else its ``eval_rows``,
    else the run's labels of its split (``labels/<task>.json``); None when nothing says."""
    for key in ("labels", "predictions"):
        if isinstance(row.get(key), list) and row[key]:
            return len(row[key])
    if isinstance(row.get("eval_rows"), int):
        return row["eval_rows"]
    labels = (labels_by_split or {}).get(row.get("eval_split"))
    return len(labels) if labels else None


def eval_sizes(rows: list[dict], labels_by_task: dict[str, dict[str, list]] | None = None) -> dict[str, int]:
    """Each task's evaluation set size: the fewest rows any of its ok rows was scored on (tasks whose rows
    say nothing about it are left out)."""
    sizes: dict[str, int] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        size = eval_size(row, (labels_by_task or {}).get(row["task"]))
        if size is not None:
            sizes[row["task"]] = min(size, sizes.get(row["task"], size))
    return sizes


def too_small(size: int | None) -> bool:
    """Whether an evaluation set of ``size`` rows is too small for its intervals (and gates) to mean anything."""
    return size is not None and size < MIN_EVAL_ROWS


def relative_to_baseline(row: dict, baseline: dict | None, gated: bool = True) -> dict:
    """The relative columns of one ok row (all None without a baseline); gates stay None unless ``gated``
    (a task whose evaluation set is too small)."""
    out = {"baseline_metric": None, **delta_columns(None), "metric_kept": None, **dict.fromkeys(GATES),
           "compared_on": None, "per_token_withheld": None, **bits_per_byte_columns(row, baseline),
           "size_ratio": None, **speedup_columns(row, baseline), **reference_columns(row)}
    if baseline is None or row["status"] != "ok":
        return out
    out["baseline_metric"] = baseline["metric"]
    compared = (row["metric_name"], row.get("metric"), baseline.get("metric"))
    if tokens_differ(row, baseline):    # no per-token delta: shares and gates on bits per byte
        out["per_token_withheld"] = withheld_reason(row, baseline)
        compared = ("bits_per_byte", out["bits_per_byte"], out["baseline_bits_per_byte"])
    elif (delta := paired_delta(row, baseline)) is not None:
        out.update(delta_columns(delta))
    elif row.get("metric") is not None and baseline.get("metric") is not None:
        out["metric_delta"] = row["metric"] - baseline["metric"]
    out["compared_on"] = compared[0]
    kept = kept_share(*compared)
    if kept is not None:
        out["metric_kept"] = kept
        if gated:
            out.update({gate: bool(kept >= share - 1e-12) for gate, share in GATES.items()})
    out["size_ratio"] = ratio(row.get("size_bytes"), baseline.get("size_bytes"))
    return out


SPEEDUP_COLUMNS = ("speedup_p50", "speedup_ci95_low", "speedup_ci95_high", "speedup_significant",
                   "speedup_interleaved", "speedup_overlap")
REFERENCE_COLUMNS = ("speedup_vs_reference_p50", "speedup_vs_reference_ci95_low", "speedup_vs_reference_ci95_high",
                     "speedup_vs_reference_significant", "speedup_vs_reference_source", "reference_backend_label")


def speedup_columns(row: dict, baseline: dict | None) -> dict:
    """The teacher's median latency over the model's, its 95% interval and whether that excludes 1.

    Rows carry a ``speedup`` timed interleaved with the teacher in one job (paired bootstrap interval); it is
    significant when the whole interval lies beyond 1 +- its ``resolution`` (the timing's target precision:
    what an A/A pair of one model can show through memory layout alone), so it always excludes 1.
    Rows measured before that have none (a ratio of two cells' p50s, timed apart, is never computed): only whether
    the two p10-p90 ranges overlap (``speedup_overlap``), with ``speedup_interleaved`` false."""
    out = dict.fromkeys(SPEEDUP_COLUMNS)
    if row["status"] != "ok":
        return out
    measured = row.get("speedup")
    if measured:
        return {**out, **measured_columns(measured, "speedup_p50", "speedup"), "speedup_interleaved": True}
    if baseline is None or row is baseline:
        return out
    overlap = ranges_overlap(latency_range(row.get("latency_ms")), latency_range(baseline.get("latency_ms")))
    return {**out, "speedup_interleaved": False, "speedup_overlap": overlap}


def measured_columns(measured: dict | None, value: str, prefix: str) -> dict:
    """A measured ratio (``ratio``, ``ci95``, ``resolution``) as ``value``, ``<prefix>_ci95_low/high`` and
    ``<prefix>_significant`` (the whole interval beyond 1 +- the resolution); all None without a ratio."""
    names = (value, f"{prefix}_ci95_low", f"{prefix}_ci95_high", f"{prefix}_significant")
    if not measured or measured.get("ratio") is None:
        return dict.fromkeys(names)
    low, high = measured.get("ci95") or (None, None)
    beyond = None if low is None else Estimate(measured["ratio"], low, high).beyond(
        1.0, measured.get("resolution", TIMING_RESOLUTION))
    return dict(zip(names, (measured["ratio"], low, high, beyond)))


def reference_columns(row: dict) -> dict:
    """The row's speed-up against the teacher on the suite's reference backend, as measured in its job
    (``speedup_vs_reference``): the ratio, its paired 95% interval and whether that lies beyond 1 +- the resolution,
    how it was obtained (``timed``, ``same-as-speedup``, ``is-reference``) and the reference's backend label. Empty
    for rows without one (rows of older runs, a reference that could not run; never a ratio of cells)."""
    versus = row.get("speedup_vs_reference") if row["status"] == "ok" else None
    out = measured_columns(versus, "speedup_vs_reference_p50", "speedup_vs_reference")
    out["speedup_vs_reference_source"] = (versus or {}).get("source")
    out["reference_backend_label"] = (versus or {}).get("reference")
    return out


def versus_reference_ratio(row: dict, objective: str = "latency") -> float | None:
    """The measured speed-up against the reference backend's teacher that ranks a row: its forward latency's
    (``latency``) or, for a causal LM's decoding (``decode``), its full ``generate`` calls'; None without one."""
    versus = (row.get("generation") or {}).get("speedup_vs_reference") if objective == "decode" \
        else row.get("speedup_vs_reference")
    return (versus or {}).get("ratio") if row.get("status", "ok") == "ok" else None


def timing_resolution(rows: list[dict], objective: str = "latency") -> float:
    """The relative difference below which the rows' measured speed-ups are one speed: the largest ``resolution`` their
    timings were taken to (each the timing's target precision; ``TIMING_RESOLUTION`` for rows without one)."""
    found = [versus.get("resolution") for row in rows
             if (versus := ((row.get("generation") or {}).get("speedup_vs_reference") if objective == "decode"
                            else row.get("speedup_vs_reference")))]
    return max([value for value in found if value is not None], default=TIMING_RESOLUTION)


def delta_columns(delta: Delta | None, prefix: str = "", name: str = "metric_delta") -> dict:
    """``<prefix><name>`` (``metric_delta``), its interval and whether it excludes zero (all None without a delta)."""
    names = [f"{prefix}{name}{part}" for part in ("", "_ci95_low", "_ci95_high", "_significant")]
    if delta is None:
        return dict.fromkeys(names)
    return dict(zip(names, (delta.value, delta.low, delta.high, delta.significant)))


def achieved_gflops(flops: int | float | None, seconds: float | None) -> float | None:
    """``flops / seconds`` in GFLOP/s; None if an input is None or ``seconds <= 0``."""
    if flops is None or seconds is None or seconds <= 0:
        return None
    return flops / seconds / 1e9


def percent_of_peak(achieved: float | None, peak_gflops: float | None) -> float | None:
    """``achieved`` as a percentage of ``peak_gflops``; None if an input is None or the peak is <= 0."""
    if achieved is None or peak_gflops is None or peak_gflops <= 0:
        return None
    return 100.0 * achieved / peak_gflops


def roofline(row: dict) -> dict:
    """Achieved GFLOP/s at the median latency (at the natural length, whose calls differ in FLOPs and whose ``flops``
    is their mean: at the mean latency, i.e. all the FLOPs over all the time), and its share of the run's measured
    matmul peak."""
    flops, latency, peak = row.get("flops"), row.get("latency_ms") or {}, row.get("roofline_peak") or {}
    typical = latency.get("mean" if row.get("seq_len") == NATURAL else "p50")
    achieved = achieved_gflops(flops or None, typical / 1e3 if typical else None)
    return {"gflop_per_batch": flops / 1e9 if flops else None, "achieved_gflops": achieved,
            "peak_gflops": peak.get("gflops"), "peak_dtype": peak.get("dtype"),
            "pct_of_peak": percent_of_peak(achieved, peak.get("gflops"))}


def front_score(row: dict) -> float:
    """A row's metric as a Pareto front's score (higher is better): perplexity negated; a causal LM's bits per byte
    negated where the row has it (it ranks models of one tokenizer as perplexity does, and of two as well)."""
    if bits_per_byte(row) is not None:
        return -bits_per_byte(row)
    return row["metric"] if higher_is_better(row["metric_name"]) else -row["metric"]


def decode_roofline(row: dict) -> dict:
    """A causal LM's decoding against the memory roof: at most ``batch x bandwidth / bytes a step reads`` tokens/s,
    and the share of that roof its measured decode tokens/s reach (batch 1 is where it binds). The bytes a step reads
    are what the cell counted (``generation.step_bytes.total``: weights at their runtime dtypes, one embedding row
    per sequence where the table is only looked up, the KV cache at its dtype and mean length); a row without them
    (measured before they were counted) gets no roof: the deployed file size it used to stand for is not what a
    step reads (a sparse model runs dense, an int4 graph keeps an fp32 table it reads one row of)."""
    generation, bandwidth = row.get("generation") or {}, row.get("memory_bandwidth") or {}
    decode, gbs = generation.get("decode_tokens_per_s"), bandwidth.get("gbs")
    step = (generation.get("step_bytes") or {}).get("total")
    if not (decode and gbs and step):
        return {"bandwidth_gbs": gbs, "bytes_per_step": step, "roof_tokens_per_s": None,
                "pct_of_bandwidth_roof": None}
    roof = generation["batch_size"] * gbs * 1e9 / step
    return {"bandwidth_gbs": gbs, "bytes_per_step": step, "roof_tokens_per_s": roof,
            "pct_of_bandwidth_roof": 100.0 * decode / roof}


def analyse(rows: list[dict], reference: str | None = None,
            labels_by_task: dict[str, dict[str, list]] | None = None) -> list[dict]:
    """Each row with every relative and roofline column added; with a ``reference`` pipeline, also
    ``reference_metric_delta[_ci95_low|_high]`` against that pipeline's row. Rows of a task whose evaluation
    set has fewer than ``MIN_EVAL_ROWS`` rows get no gate (``gates_withheld``); ``labels_by_task`` (the run's
    ``labels/<task>.json``) tells that size for rows that carry neither labels, predictions nor ``eval_rows``."""
    baselines = baseline_index(rows)
    references = baseline_index(rows, reference) if reference else {}
    small = {task for task, size in eval_sizes(rows, labels_by_task).items() if too_small(size)}
    return [{**row, "is_baseline": is_baseline(row),
             **relative_to_baseline(row, baseline_of(row, baselines), gated=row["task"] not in small),
             "gates_withheld": row["task"] in small, **roofline(row), **decode_roofline(row),
             **(reference_delta(row, baseline_of(row, references)) if reference else {})} for row in rows]


def reference_delta(row: dict, other: dict | None) -> dict:
    """The paired metric delta of ``row`` against another pipeline's row on the same backend and shape."""
    delta = paired_delta(row, other) if other is not None and row["status"] == "ok" else None
    return delta_columns(delta, "reference_")


def is_baseline(row: dict) -> bool:
    """Whether the row is the teacher on its own fp32 backend: the row others are measured against."""
    return row["pipeline"] == BASELINE and row["fp32_backend_label"] == row["backend_label"]


def geometric_mean(values) -> float | None:
    finite = [v for v in values if v is not None and v > 0 and np.isfinite(v)]
    return float(np.exp(np.mean(np.log(finite)))) if finite else None


def cells_of(analysed: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """ok rows grouped by (task, pipeline, backend label), in the order first seen."""
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for row in analysed:
        if row["status"] == "ok":
            cells.setdefault((row["task"], row["pipeline"], row["backend_label"]), []).append(row)
    return cells


def summary_records(analysed: list[dict]) -> list[dict]:
    """One record per (pipeline, backend) across tasks: mean metric and delta, how many tasks
    pass each gate (of the ``gated_tasks`` whose gates are marked), the geometric-mean size ratio and, per shape,
    the geometric means of the measured speed-ups against the teacher on the same backend and on the reference
    backend."""
    by_model: dict[tuple[str, str], list[list[dict]]] = {}
    for (_, pipeline, label), rows in cells_of(analysed).items():
        by_model.setdefault((pipeline, label), []).append(rows)
    shapes = sorted({(r["batch_size"], r["seq_len"]) for r in analysed if r["status"] == "ok"}, key=shape_order)
    records = []
    for (pipeline, label), cells in by_model.items():
        firsts = [rows[0] for rows in cells]   # metric, size and gates are the same at every shape
        record = {
            "pipeline": pipeline, "backend_label": label, "tasks": len(cells),
            "mean_metric": float(np.mean([r["metric"] for r in firsts])),
            "mean_metric_delta": _mean(r["metric_delta"] for r in firsts),
            **{gate: sum(bool(r[gate]) for r in firsts) if any(r[gate] is not None for r in firsts) else None
               for gate in GATES},
            "gated_tasks": sum(any(r[gate] is not None for gate in GATES) for r in firsts),
            "gates_withheld": sum(bool(r.get("gates_withheld")) for r in firsts),
            "geomean_size_ratio": geometric_mean(r["size_ratio"] for r in firsts),
        }
        for batch, seq in shapes:
            at_shape = [r for rows in cells for r in rows if (r["batch_size"], r["seq_len"]) == (batch, seq)]
            record[f"geomean_speedup_b{batch}_s{seq}"] = geometric_mean(r["speedup_p50"] for r in at_shape)
            record[f"geomean_speedup_vs_reference_b{batch}_s{seq}"] = geometric_mean(
                r["speedup_vs_reference_p50"] for r in at_shape)
        records.append(record)
    return records


def _mean(values) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
