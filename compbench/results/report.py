"""Reports from ``results.jsonl`` alone: ``results.csv``, ``report.md`` and ``plots/``.

``report.md`` opens with what a reader must know before trusting any number ("Read this first": an
evaluation set too small for its intervals, a teacher no better than a constant prediction), then a
summary across tasks, then per task two tables: each model and backend's metric against the teacher's
(paired interval, gates, size), and each timed shape's latency with its measured speed-ups (against the teacher on
the suite's reference backend, the headline, and on the same backend; spread, roofline), then plots. A speed-up is
only ever a ratio measured interleaved in one job: rows without one show "—", never a ratio of two cells' medians.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import pandas as pd

from compbench.config.measure import NATURAL, shape_order
from compbench.results.analysis import (
    GATES,
    MIN_EVAL_ROWS,
    analyse,
    cells_of,
    change_mark,
    eval_sizes,
    front_score,
    latency_range,
    summary_records,
    timing_resolution,
)
from compbench.results.pareto import pareto_mask
from compbench.results.rows import read_labels, read_rows
from compbench.results.table import tidy_frame
from compbench.results.trust import trust_warnings_for
from compbench.tasks.glue import TASKS

TEXT_COLUMNS = ("pipeline", "backend", "shape")
PLOTS_DIR = "plots"


class RunReport:
    """Every report of one run, built from its rows."""

    def __init__(self, rows: list[dict], env: dict | None = None, reference: str | None = None,
                 labels_by_task: dict[str, dict[str, list]] | None = None) -> None:
        self.rows, self.env, self.reference = rows, env or {}, reference
        self.labels_by_task = labels_by_task or {}      # the run's labels/<task>.json, for rows without labels
        self.analysed = analyse(rows, reference, self.labels_by_task)

    @classmethod
    def from_run_dir(cls, run_dir: Path, reference: str | None = None) -> "RunReport":
        run_dir = Path(run_dir)
        rows = with_labels(read_rows(run_dir / "results.jsonl"), run_dir)
        labels = {task: read_labels(run_dir, task) for task in dict.fromkeys(r["task"] for r in rows)}
        env_path = run_dir / "env.json"
        return cls(rows, json.loads(env_path.read_text()) if env_path.is_file() else {}, reference, labels)

    def frame(self) -> pd.DataFrame:
        """One tidy row per measurement (``results.csv``); built once."""
        return self._frame

    @cached_property
    def _frame(self) -> pd.DataFrame:
        return tidy_frame(self.analysed)

    @cached_property
    def warnings(self) -> list[str]:
        """What a reader must know before trusting the numbers (``trust.trust_warnings_for``), one line each."""
        return trust_warnings_for(self.rows, self.labels_by_task)

    @property
    def pipelines(self) -> list[str]:
        return sorted({row["pipeline"] for row in self.rows})

    def write(self, run_dir: Path) -> None:
        """results.csv, plots/ and report.md (which links the plots) into ``run_dir``."""
        from compbench.results.plots import write_plots

        run_dir = Path(run_dir)
        frame = self.frame()
        frame.to_csv(run_dir / "results.csv", index=False)
        plots = write_plots(frame[frame["status"] == "ok"], run_dir / PLOTS_DIR)
        links = {task: [path.relative_to(run_dir) for path in paths] for task, paths in plots.items()}
        (run_dir / "report.md").write_text(self.markdown(links))

    def markdown(self, plots: dict[str, list[Path]] | None = None) -> str:
        return markdown_report(self.analysed, self.env, plots or {}, self.reference, self.warnings)

    def json(self) -> dict:
        frame = self.frame()
        return {"run_ids": sorted({r["run_id"] for r in self.rows}),
                "summary": summary_records(self.analysed),
                "rows": json.loads(frame.to_json(orient="records"))}

    def render(self, fmt: str) -> str:
        if fmt == "csv":
            return self.frame().to_csv(index=False)
        if fmt == "json":
            return json.dumps(self.json(), indent=1)
        return self.markdown()


def write_reports(run_dir: Path, reference: str | None = None) -> RunReport:
    report = RunReport.from_run_dir(run_dir, reference)
    report.write(run_dir)
    return report


def with_labels(rows: list[dict], run_dir: Path) -> list[dict]:
    """Rows measured before rows carried their labels take them from the run's ``labels/<task>.json``."""
    labels: dict[str, dict] = {}
    for row in rows:
        if row.get("predictions") and not row.get("labels"):
            by_split = labels.setdefault(row["task"], read_labels(run_dir, row["task"]))
            row["labels"] = by_split.get(row.get("eval_split"))
    return rows


# ---------------------------------------------------------------------- markdown

READING_GUIDE = (
    "How to read this: every number is measured in this run folder's rows (`results.jsonl`). "
    "**Metric**: the task's official metric on its validation split, with a 95% bootstrap interval. "
    "**Δ**: the difference to the uncompressed teacher on the same backend (fp32), scored on the same rows, with a "
    "95% paired bootstrap interval; ▲/▼ mark an interval that excludes zero (a real gain/loss: for perplexity a "
    "fall is the gain), no mark means within noise. **Gates** (MLPerf style): ✓ when the model keeps at least 99% / "
    "99.9% of the teacher's metric; "
    f"— on a task evaluated on fewer than {MIN_EVAL_ROWS} rows, where they would mean nothing. "
    "**Latency**: ms per batch at fixed threads after warm-up (p50, and the p10–p90 spread of the timed calls); "
    "**speed-up vs reference** (the headline): the median latency of the teacher on the suite's reference backend "
    "(the model as served today, PyTorch fp32 at the same threads by default) over the model's, both timed in the "
    "same job with their calls interleaved, with a 95% paired bootstrap interval; **vs teacher, same backend**: the "
    "same against the teacher on the model's own backend; ≈ marks no difference: an interval that reaches into "
    "1 ± the timing's resolution (2% by default, what two copies of one model can differ by); — marks a row "
    "without that measurement (an older run, or a reference that could not run). "
    "**% of peak**: the model's FLOPs for the shape over its "
    "p50, against this run's measured dense matmul peak on that device and thread count in the precision the model "
    "computes in (int8 models against the faster int8 rate of `torch._int_mm` and fbgemm's INT8 Linear, counting "
    "2 operations per multiply-add). "
    "★ marks the Pareto front (no other row is both better in metric and smaller / measured faster against the "
    "reference at that shape; speed-ups within the timing's resolution of each other count as equal)."
)


def markdown_report(analysed: list[dict], env: dict, plots: dict[str, list[Path]] | None = None,
                    reference: str | None = None, warnings: list[str] | None = None) -> str:
    """The report; ``warnings`` (default: computed from ``analysed``, which carry their labels) open it."""
    run_ids = sorted({r["run_id"] for r in analysed})
    lines = [f"# compbench report: {', '.join(run_ids) or '(no rows)'}", ""]
    lines += read_this_first(trust_warnings_for(analysed) if warnings is None else warnings)
    lines += machine_lines(env, analysed)
    lines += [READING_GUIDE, ""]
    lines += reuse_note(analysed)
    lines += summary_section(analysed)
    for task in dict.fromkeys(r["task"] for r in analysed):
        lines += task_section(task, [r for r in analysed if r["task"] == task], (plots or {}).get(task, []), reference)
    return "\n".join(lines) + "\n"


def read_this_first(warnings: list[str]) -> list[str]:
    """The warnings a reader must see before any number, as a list under a bold heading."""
    if not warnings:
        return []
    return ["**Read this first:**", "", *(f"- {warning}" for warning in warnings), ""]


def machine_lines(env: dict, analysed: list[dict]) -> list[str]:
    lines = []
    if env:
        packages = env.get("packages", {})
        gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        lines.append(f"Machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs); GPUs: {gpus}; python "
                     f"{env.get('python')}; torch {packages.get('torch')}; onnxruntime {packages.get('onnxruntime')}.")
    peaks = {json.dumps(r["roofline_peak"], sort_keys=True) for r in analysed if r.get("roofline_peak")}
    if peaks:
        described = [f"{p['device']} {p['threads']} thread(s) {p['dtype']}: {p['gflops']:.1f} GFLOP/s (n={p['size']}"
                     f"{_trials_text(p)})"
                     for p in sorted((json.loads(p) for p in peaks),
                                     key=lambda p: (p["device"], p["threads"], p["dtype"]))]
        lines.append(
            "Dense matmul peak measured in this run (fastest n×n×n product, best of repeated trials; torch.matmul; "
            "for int8 the faster of torch._int_mm and fbgemm's INT8 Linear): "
            + "; ".join(described)
            + "."
        )
    return [*lines, ""] if lines else []


def _trials_text(peak: dict) -> str:
    """How far a peak's trials agreed: their number and spread ((max - min) / max of each trial's best)."""
    trials = peak.get("trials")
    if not trials or peak.get("spread") is None:
        return ""           # measured before trials were kept
    return f"; best of {len(trials)} trials, spread {100 * peak['spread']:.0f}%"


def reuse_note(rows: list[dict]) -> list[str]:
    """Say so when some cells' timings come from the result cache (an earlier run on this machine)."""
    reused = {r["cell_id"]: r["measured_in_run"] for r in rows
              if r["status"] == "ok" and r.get("measured_in_run") not in (None, r["run_id"])}
    if not reused:
        return []
    cells = {r["cell_id"] for r in rows if r["status"] == "ok"}
    return [
        f"Reused measurements: {len(reused)} of {len(cells)} measured cells come from the result cache, measured "
        f"on this machine (same CPU, GPUs and library versions) in run(s) {', '.join(sorted(set(reused.values())))}. "
        "Timings from different runs can differ with the machine's load; `compbench run --remeasure` times every "
        "cell in one run.",
        "",
    ]


def summary_section(analysed: list[dict]) -> list[str]:
    records = summary_records(analysed)
    if not records:
        return []
    tasks = sorted({r["task"] for r in analysed if r["status"] == "ok"})
    speedup_columns = [key for key in records[0] if key.startswith("geomean_speedup_vs_reference_")]
    table = []
    for record in records:
        out = {"pipeline": record["pipeline"], "backend": record["backend_label"], "tasks": str(record["tasks"]),
               "mean metric": f"{record['mean_metric']:.4f}", "mean Δ": _signed(record["mean_metric_delta"])}
        for gate, share in GATES.items():
            out[f"≥{share * 100:g}%"] = summary_gate(record, gate)
        out["size × (geomean)"] = _times(record["geomean_size_ratio"])
        for key in speedup_columns:
            batch, seq = key.removeprefix("geomean_speedup_vs_reference_b").split("_s")
            out[f"speed-up vs reference b{batch}×{seq}"] = _times(record[key]) or "—"
        table.append(out)
    return [f"## Summary across tasks ({', '.join(tasks)})", "",
            "Mean metric and Δ over the tasks each row was measured on (metrics of different tasks are averaged as "
            "they are: read per-task tables for anything finer); gates: tasks passing, of the tasks whose gates are "
            f"marked (— for a task evaluated on fewer than {MIN_EVAL_ROWS} rows); size ratio: geometric mean over "
            "tasks against the teacher on the same backend; speed-up: geometric mean over tasks of the speed-ups "
            "measured against the teacher on the reference backend (— where none was measured).", "",
            markdown_table(table), ""]


def teacher_origin(step: dict) -> str:
    """How the teacher was made, from the first step of the rows' lineage."""
    if step.get("step") == "finetune":
        return (f"{step['base']} fine-tuned on {step['train_rows']} rows, {step['steps']} steps "
                f"({step['seconds']:.0f}s)")
    if step.get("step") == "given" and step.get("kind") == "causal-lm":
        return f"{step['base']} as given (a causal LM is measured as it is)"
    if step.get("step") == "given":
        reading = step.get("labels_read_as")
        read_as = ("; labels read as the model's: " + ", ".join(f"{name} as {meant}" for name, meant in
                                                                reading.items())) if reading else ""
        return f"{step['base']} as given (teacher.finetune: false, no training){read_as}"
    return str(step.get("base") or step.get("step"))


def dropped_note(row: dict) -> str:
    """The rows the data lost before use (blank text, no label, malformed lines), per split and reason."""
    dropped = {split: reasons for split, reasons in (row.get("dropped_rows") or {}).items() if reasons}
    if not dropped:
        return ""
    parts = [f"{split}: " + ", ".join(f"{n} {reason}" for reason, n in reasons.items())
             for split, reasons in dropped.items()]
    return f" (dropped before use: {'; '.join(parts)})"


def task_section(task: str, rows: list[dict], plots: list[Path], reference: str | None = None) -> list[str]:
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"## {task}", ""]
    teacher = next((r["lineage"][0] for r in ok if r.get("lineage")), None)
    if teacher:
        scored = (f"{ok[0]['eval_rows']} documents ({ok[0]['eval_tokens']} tokens scored)" if ok[0].get("eval_tokens")
                  else f"{ok[0].get('eval_rows')} rows")
        lines += [f"Teacher: {teacher_origin(teacher)}; data: {ok[0].get('data_source')}; evaluated on "
                  f"{scored} of {ok[0].get('eval_split')}{dropped_note(ok[0])}; "
                  f"seeds {ok[0].get('seeds')}.", ""]
    if ok:
        cells = [cell_rows[0] for cell_rows in cells_of(ok).values()]
        lines += [f"### {ok[0]['metric_name']} and size", "", markdown_table(accuracy_table(cells, reference)), ""]
        lines += positive_label_note(ok)
        lines += bits_per_byte_note(cells)
        lines += withheld_note(ok)
        lines += storage_notes(cells)
        lines += ["### Latency", "", markdown_table(latency_table(ok)), ""]
        lines += reference_notes(ok)
        lines += natural_section(ok)
        decoding = decoding_table(ok)
        if decoding:
            lines += ["### Decoding (greedy, every call the same number of new tokens)", "",
                      markdown_table(decoding), ""]
            lines += bandwidth_note(ok)
        missing = sorted({r["backend_label"] for r in ok if r["baseline_metric"] is None})
        if missing:
            lines += [
                f"No teacher row on {', '.join(f'`{m}`' for m in missing)}: relative columns are empty there.",
                "",
            ]
    lines += [f"![{task}: {path.stem}]({path.as_posix()})" for path in plots]
    lines += [""] if plots else []
    return lines + not_measured(rows)


def not_measured(rows: list[dict]) -> list[str]:
    """Skipped and failed cells, one line per (status, reason) with the cells it applies to."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["status"] != "ok":
            cells = by_reason.setdefault((row["status"], row["reason"] or ""), [])
            if row["cell_id"] not in cells:
                cells.append(row["cell_id"])
    if not by_reason:
        return []
    lines = ["Not measured:", ""]
    for (status, reason), cells in by_reason.items():
        named = ", ".join(f"`{cell}`" for cell in cells)
        lines.append(
            f"- **{status}**: {reason} ({named})" if len(cells) > 1 else f"- `{cells[0]}`: **{status}**: {reason}"
        )
    return [*lines, ""]


def accuracy_table(cells: list[dict], reference: str | None = None) -> list[dict]:
    """One line per model and backend: metric, Δ (to the teacher, and to a ``reference`` pipeline
    when one is named), gates, size (none of these depend on the shape)."""
    front = pareto_mask([r["size_bytes"] for r in cells], [front_score(r) for r in cells])
    metric_name = cells[0]["metric_name"]
    label = positive_label(cells[0]) if metric_name == "f1" else None
    positive = f", positive {label} " if label else " "
    per_byte = any(r.get("bits_per_byte") is not None for r in cells)
    table = []
    for row, on_front in zip(cells, front):
        low, high = row["metric_ci95"] or (float("nan"), float("nan"))
        table.append({
            "pipeline": row["pipeline"] + (" ★" if on_front else ""),
            "backend": row["backend_label"],
            f"{metric_name}{positive}(95% CI)": f"{row['metric']:.4f} [{low:.3f}, {high:.3f}]",
            "Δ vs teacher (95% CI)": delta_text(row),
            **({f"Δ vs {reference} (95% CI)": delta_text(row, "reference_")} if reference else {}),
            **{f"≥{share * 100:g}%": "—" if row.get("gates_withheld") else _gate(row[gate])
               for gate, share in GATES.items()},
            "size MB": f"{row['size_bytes'] / 1e6:.1f}",
            "size ×": _times(row["size_ratio"]),
            "params M": f"{row['params'] / 1e6:.2f}",
            "non-zero M": f"{row['nonzero_params'] / 1e6:.2f}" if row.get("nonzero_params") is not None else "",
            "parity": "" if row.get("parity_max_abs_diff") is None else f"{row['parity_max_abs_diff']:.1e}",
            **(bits_per_byte_columns(row) if per_byte else {}),
            **{f"zero-shot {task} (95% CI)": f"{z['accuracy']:.3f} [{z['ci95'][0]:.3f}, {z['ci95'][1]:.3f}]"
               for task, z in (row.get("zero_shot") or {}).items()},
        })
    if not any(line["parity"] for line in table):
        table = [{k: v for k, v in line.items() if k != "parity"} for line in table]
    return table


def decoding_table(ok: list[dict]) -> list[dict]:
    """A causal LM's decoding, one line per shape (batch x prompt tokens, + new tokens): time to first token, per
    output token, tokens/s, the speed-ups of full calls against the teacher on the reference backend and on its own
    (interleaved), peak memory, KV cache, and the share of the memory-bandwidth roof its decoding reaches."""
    table = []
    for row in sorted((r for r in ok if r.get("generation")), key=row_shape_order):
        g = row["generation"]
        speedup = g.get("speedup")
        table.append({
            "pipeline": row["pipeline"], "backend": row["backend_label"],
            "shape": f"{row['batch_size']}×{g['prompt_tokens']}+{g['new_tokens']}",
            "first token ms": f"{g['ttft_ms']['p50']:.1f}",
            "ms / token": f"{g['time_per_token_ms']:.2f}",
            "tokens/s": f"{g['tokens_per_s']:.1f}",
            "decode tokens/s": "" if g.get("decode_tokens_per_s") is None else f"{g['decode_tokens_per_s']:.1f}",
            "speed-up vs reference (95% CI)": _generation_versus(g.get("speedup_vs_reference")),
            "vs teacher, same backend (95% CI)": (
                f"{speedup['ratio']:.2f}× [{speedup['ci95'][0]:.2f}, {speedup['ci95'][1]:.2f}]" if speedup else ""),
            "peak RSS MB": f"{g['peak_rss_bytes'] / 1e6:.0f}",
            "KV cache MB": "" if g.get("kv_cache_bytes") is None else f"{g['kv_cache_bytes'] / 1e6:.1f}",
            "MB read / step": "" if row.get("bytes_per_step") is None else f"{row['bytes_per_step'] / 1e6:.1f}",
            "bandwidth GB/s": "" if row.get("bandwidth_gbs") is None else f"{row['bandwidth_gbs']:.1f}",
            "% of bandwidth roof": ("" if row.get("pct_of_bandwidth_roof") is None
                                    else f"{row['pct_of_bandwidth_roof']:.0f}% of {row['roof_tokens_per_s']:.0f}"),
        })
    return table


def bandwidth_note(ok: list[dict]) -> list[str]:
    """How the decoding roof is drawn, and the memory bandwidth each cell measured (each row's roof uses its own
    cell's): one value per device and threads where the cells agree, else their range."""
    measured: dict[tuple[str, int], list[float]] = {}
    for row in ok:
        if row.get("generation") and row.get("bandwidth_gbs"):
            measured.setdefault((row["device"], row["threads"]), []).append(row["bandwidth_gbs"])
    if not measured:
        return []
    parts = []
    for (device, threads), values in sorted(measured.items()):
        low, high = min(values), max(values)
        value = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"
        parts.append(f"{device} {threads} thread(s): {value} GB/s")
    return [f"Memory read bandwidth, measured in each cell (column bandwidth GB/s; each row's roof uses its own): "
            f"{'; '.join(parts)}. The roof is batch × bandwidth / bytes a step reads (MB read / step: the weights "
            "at the dtypes they run in, one embedding row per sequence where the table is only looked up, the KV "
            "cache at its dtype and mean length) tokens/s.", ""]


def _generation_versus(versus: dict | None) -> str:
    """A decoding's full-call speed-up against the reference backend's teacher (— without one)."""
    if not versus or versus.get("ratio") is None:
        return "—"
    if versus.get("source") == "is-reference":
        return "1.00× (reference)"
    low, high = versus["ci95"]
    return f"{versus['ratio']:.2f}× [{low:.2f}, {high:.2f}]"


def row_shape_order(row: dict) -> tuple:
    return shape_order((row["batch_size"], row["seq_len"]))


def latency_table(ok: list[dict]) -> list[dict]:
    """One line per timed shape: latency and its spread, the measured speed-ups (against the reference backend's
    teacher, then the own backend's), throughput, roofline; ★ on each shape's front (metric against the speed-up
    measured against the reference: rows without one are never on it)."""
    ordered = sorted(ok, key=row_shape_order)
    front = {}
    for shape in dict.fromkeys((r["batch_size"], r["seq_len"]) for r in ordered):
        at_shape = [r for r in ordered if (r["batch_size"], r["seq_len"]) == shape]
        costs = [1 / r["speedup_vs_reference_p50"] if r.get("speedup_vs_reference_p50") else float("nan")
                 for r in at_shape]
        tied = timing_resolution(at_shape)        # speed-ups within it are one speed: the better metric wins
        front.update({id(r): f for r, f in zip(at_shape, pareto_mask(costs, [front_score(r) for r in at_shape],
                                                                     tied))})
    table = []
    for row in ordered:
        latency = row["latency_ms"]
        low, high = latency_range(latency)
        table.append({
            "pipeline": row["pipeline"] + (" ★" if front[id(row)] else ""),
            "backend": row["backend_label"],
            "shape": f"{row['batch_size']}×{row['seq_len']}",
            "p50 ms": f"{latency['p50']:.2f}",
            "p10–p90 ms": f"{low:.2f}–{high:.2f}",
            "n": str(latency["n"]),
            "speed-up vs reference": reference_speedup_text(row),
            "vs teacher, same backend": _speedup(row),
            "throughput /s": f"{row['throughput_per_s']:.1f}",
            "GFLOP/s": "" if row["achieved_gflops"] is None else f"{row['achieved_gflops']:.1f}",
            "% of peak": "" if row["pct_of_peak"] is None else f"{row['pct_of_peak']:.0f}%",
            **device_columns(row),
        })
    if not any(row.get("h2d_copy_ms") is not None or row.get("gpu_memory") for row in ordered):
        table = [{k: v for k, v in line.items() if k not in DEVICE_COLUMNS} for line in table]
    return table


DEVICE_COLUMNS = ("H2D copy ms", "GPU peak alloc MB", "GPU peak reserved MB")


def natural_section(ok: list[dict]) -> list[str]:
    """The natural-length shapes: the lengths their timed calls ran (from the teacher's row on the reference
    backend, else the first row of the shape: a model with another tokenizer counts other tokens, in its own row's
    ``natural_lengths``), then each model's p50/p90/p99 over them and its measured speed-up."""
    natural = [row for row in ok if row["seq_len"] == NATURAL and row.get("natural_lengths")]
    if not natural:
        return []
    lines = ["### Natural lengths (each batch of real rows padded to its own longest row, as a service pads)", ""]
    lengths = []
    for batch in sorted({row["batch_size"] for row in natural}):
        at_batch = [row for row in natural if row["batch_size"] == batch]
        shown = next((row for row in at_batch if (row.get("speedup_vs_reference") or {}).get("source")
                      == "is-reference"), at_batch[0])
        spread = shown["natural_lengths"]
        tokens, width = spread["row_tokens"], spread["padded_width"]
        lengths.append({
            "batch": str(batch), "timed calls": str(spread["calls"]), "of batches": str(spread["batches"]),
            "row tokens p10/p50/p90/max": f"{tokens['p10']:.0f} / {tokens['p50']:.0f} / {tokens['p90']:.0f} / "
                                          f"{tokens['max']}",
            "padded width p50/p90/max": f"{width['p50']:.0f} / {width['p90']:.0f} / {width['max']}",
            "padding": f"{spread['padding_share']:.0%}", "cut at": str(spread["truncated_at"]),
            "counted by": f"{shown['pipeline']} on {shown['backend_label']}",
        })
    lines += [markdown_table(lengths), ""]
    table = []
    for row in sorted(natural, key=row_shape_order):
        latency = row["latency_ms"]
        table.append({"pipeline": row["pipeline"], "backend": row["backend_label"], "batch": str(row["batch_size"]),
                      "p50 ms": f"{latency['p50']:.2f}", "p90 ms": f"{latency['p90']:.2f}",
                      "p99 ms": f"{latency['p99']:.2f}", "n": str(latency["n"]),
                      "speed-up vs reference": reference_speedup_text(row),
                      "vs teacher, same backend": _speedup(row)})
    return lines + [markdown_table(table), "",
                    "Speed-ups here are measured interleaved round by round on the same rows (the i-th call of each "
                    "model runs the i-th batch), so they are as paired as at a fixed shape; percentiles spread over "
                    "the lengths as well as the timing noise.", ""]


def device_columns(row: dict) -> dict:
    """GPU cells: the host-to-device copy of the batch (timed apart from the compute above) and peak memory."""
    memory = row.get("gpu_memory") or {}
    values = (row.get("h2d_copy_ms"), memory.get("allocated_bytes"), memory.get("reserved_bytes"))
    return {"H2D copy ms": "" if values[0] is None else f"{values[0]:.3f}",
            "GPU peak alloc MB": "" if values[1] is None else f"{values[1] / 1e6:.0f}",
            "GPU peak reserved MB": "" if values[2] is None else f"{values[2] / 1e6:.0f}"}


def delta_text(row: dict, prefix: str = "", name: str = "metric_delta", metric: str | None = None) -> str:
    """``row[prefix + name]`` (the metric's delta, or ``bits_per_byte_delta`` of ``metric`` bits_per_byte) with its
    interval and mark (prefix ``reference_``: the reference pipeline); why a per-token delta was withheld."""
    if row["is_baseline"] and not prefix:
        return "(teacher)"
    if row.get("per_token_withheld") and name == "metric_delta" and not prefix:
        return "— (another tokenizer: see bits/byte)"
    value, low, high, significant = (row.get(f"{prefix}{name}{part}")
                                     for part in ("", "_ci95_low", "_ci95_high", "_significant"))
    if value is None:
        return ""
    if low is None:
        return f"{_signed(value)} (no paired rows)"
    mark = change_mark(metric or row["metric_name"], value, significant)
    return f"{_signed(value)} [{_signed(low, 3)}, {_signed(high, 3)}]{mark}"


def bits_per_byte_columns(row: dict) -> dict:
    """A causal LM's bits per byte with its interval, and its paired delta against the teacher's."""
    low, high = row.get("bits_per_byte_ci95_low"), row.get("bits_per_byte_ci95_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
    value = "" if row.get("bits_per_byte") is None else f"{row['bits_per_byte']:.4f}{interval}"
    return {"bits/byte (95% CI)": value,
            "Δ bits/byte vs teacher (95% CI)": delta_text(row, name="bits_per_byte_delta", metric="bits_per_byte")}


def bits_per_byte_note(ok: list[dict]) -> list[str]:
    """What bits per byte counts, and which models are compared on it (another tokenizer) and why."""
    if not any(r.get("bits_per_byte") is not None for r in ok):
        return []
    lines = ["Bits per byte: the scored tokens' negative log-likelihood in bits over the UTF-8 bytes of their text "
             "(each token holds the text from the end of the token before it; a document's first token, which "
             "nothing predicts, is not scored and its text not counted, nor is each window's first without "
             "overlap): the unit two tokenizers share."]
    withheld = {r["pipeline"]: r["per_token_withheld"] for r in ok if r.get("per_token_withheld")}
    lines += [f"`{pipeline}`: {reason}." for pipeline, reason in withheld.items()]
    return [*(f"- {line}" for line in lines), ""] if withheld else [lines[0], ""]


def _speedup(row: dict) -> str:
    """``1.53× [1.48, 1.58]``; ``≈`` before it when the interval reaches into 1 ± the resolution (no difference);
    ``—`` for a row timed apart from the teacher (an older run: a ratio of two cells' medians is not shown)."""
    if row["is_baseline"]:
        return "(teacher)"
    return ratio_text(row["speedup_p50"], row["speedup_ci95_low"], row["speedup_ci95_high"],
                      row["speedup_significant"])


def reference_speedup_text(row: dict) -> str:
    """The speed-up measured against the teacher on the reference backend, ``2.10× [2.04, 2.17]`` (``≈``: no
    difference); ``1.00× (reference)`` for the teacher on the reference itself; ``—`` without one."""
    if row.get("speedup_vs_reference_source") == "is-reference":
        return "1.00× (reference)"
    return ratio_text(row.get("speedup_vs_reference_p50"), row.get("speedup_vs_reference_ci95_low"),
                      row.get("speedup_vs_reference_ci95_high"), row.get("speedup_vs_reference_significant"))


def ratio_text(value: float | None, low: float | None, high: float | None, significant: bool | None) -> str:
    """A measured ratio with its interval, ``≈`` before it when that is no difference; ``—`` without a ratio."""
    if value is None:
        return "—"
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{'' if significant else '≈'}{value:.2f}×{interval}"


def reference_notes(ok: list[dict]) -> list[str]:
    """Which reference the task's rows were timed against, and why rows were not (one line per reason)."""
    labels = sorted({r["reference_backend_label"] for r in ok if r.get("speedup_vs_reference_p50") is not None})
    lines = []
    if labels:
        lines.append("Speed-up vs reference: against the teacher on " + ", ".join(f"`{label}`" for label in labels)
                     + " (the suite's reference backend), timed interleaved with the model in the same job.")
    reasons: dict[str, list[str]] = {}
    for row in ok:
        versus = row.get("speedup_vs_reference")
        if row.get("speedup_vs_reference_p50") is None:
            reason = (versus or {}).get("reason") or "measured before compbench timed rows against a reference backend"
            cells = reasons.setdefault(reason, [])
            if row["cell_id"] not in cells:
                cells.append(row["cell_id"])
    for reason, cells in reasons.items():
        lines.append(f"Not timed against the reference ({', '.join(f'`{cell}`' for cell in cells)}): {reason}.")
    return [*(f"- {line}" if len(lines) > 1 else line for line in lines), ""] if lines else []


def positive_label(row: dict) -> str | None:
    """The label binary ``f1`` counted as positive, ``1 ("equivalent")``, for a row scored by it: as the row says, or
    for rows of runs before, class 1 of a GLUE task's names; None for a row without ``f1``."""
    if "f1" not in (row.get("metrics") or {}):
        return None
    label = row.get("positive_label") or {"id": 1, "name": (TASKS[row["task"]].label_names or (None, None))[1]
                                          if row["task"] in TASKS else None}
    return f'{label["id"]} ("{label["name"]}")' if label.get("name") is not None else str(label["id"])


def positive_label_note(ok: list[dict]) -> list[str]:
    """Which label the task's binary F1 counts as positive (class 1), where it is scored by ``f1``."""
    label = next((text for text in map(positive_label, ok) if text), None)
    return [f"`f1` is the binary F1 of class {label}, the positive label.", ""] if label else []


def withheld_note(ok: list[dict]) -> list[str]:
    """Why a task's gates show — (its evaluation set is too small)."""
    if not any(r.get("gates_withheld") for r in ok):
        return []
    size = min(eval_sizes(ok).values(), default=None)
    counted = "" if size is None else f" {size} rows,"
    return [f"Gates not marked (—): the evaluation set has{counted} fewer than {MIN_EVAL_ROWS} rows; "
            "its intervals mean little.", ""]


def summary_gate(record: dict, gate: str) -> str:
    """``passing/gated`` tasks; — when every task's gates were withheld (too few rows), empty without a teacher."""
    if record[gate] is None:
        return "—" if record.get("gates_withheld") else ""
    return f"{record[gate]}/{record.get('gated_tasks', record['tasks'])}"


def _gate(value) -> str:
    return "" if value is None else ("✓" if value else "✗")


def _times(value) -> str:
    return "" if value is None else f"{value:.2f}×"


def _signed(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


# What a reader must know about a storage format to read its size and latency right.
FORMAT_NOTES = {
    "hf-sparse": "stored sparse (a bitmask of the non-zero positions plus the non-zero values), which is the "
                 "size shown where the backend loaded that file (PyTorch); ONNX Runtime loads a dense export. "
                 "Every backend runs these models on dense kernels: sparsity makes them smaller on disk, not faster.",
    "hf-low-rank": "Linear layers factorised into two smaller Linears (SVD); runs as ordinary dense layers.",
}


def storage_notes(rows: list[dict]) -> list[str]:
    notes = []
    for fmt in dict.fromkeys(r.get("artifact_format") for r in rows):
        if fmt in FORMAT_NOTES:
            pipelines = ", ".join(dict.fromkeys(r["pipeline"] for r in rows if r.get("artifact_format") == fmt))
            notes += [f"- `{fmt}` ({pipelines}): {FORMAT_NOTES[fmt]}"]
    return [*notes, ""] if notes else []


def markdown_table(records: list[dict]) -> str:
    """A pipe table; values are pre-formatted strings (kept as written), text left, numbers right."""
    table = pd.DataFrame(records)
    align = ["left" if column in TEXT_COLUMNS else "right" for column in table.columns]
    return table.to_markdown(index=False, disable_numparse=True, colalign=align)
