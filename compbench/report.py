"""Reports from ``results.jsonl`` alone: ``results.csv`` and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from compbench.results import read_rows

LATENCY_FIELDS = ("p50", "p90", "p99", "mean", "std", "min", "n", "cold")
TEXT_COLUMNS = ("pipeline", "backend")
DROPPED_FROM_CSV = ("predictions", "lineage", "latency_ms", "metrics", "metric_ci95", "steps")


def tidy_frame(rows: list[dict]) -> pd.DataFrame:
    """One flat row per measurement, with stable column names."""
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k not in DROPPED_FROM_CSV}
        latency = row.get("latency_ms") or {}
        for name in LATENCY_FIELDS:
            out[f"latency_{name}_ms" if name != "n" else "latency_n"] = latency.get(name)
        ci = row.get("metric_ci95") or [None, None]
        out["metric_ci95_low"], out["metric_ci95_high"] = ci
        for name, value in (row.get("metrics") or {}).items():
            out[f"metric_{name.replace('/', '_')}"] = value
        out["steps"] = json.dumps(row.get("steps") or [])
        flat.append(out)
    return pd.DataFrame(flat)


def write_reports(run_dir: Path) -> None:
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / "results.jsonl")
    tidy_frame(rows).to_csv(run_dir / "results.csv", index=False)
    (run_dir / "report.md").write_text(markdown_report(rows, _env(run_dir)))


def _env(run_dir: Path) -> dict:
    path = run_dir / "env.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def markdown_report(rows: list[dict], env: dict) -> str:
    run_ids = sorted({r["run_id"] for r in rows})
    lines = [f"# compbench report: {', '.join(run_ids) or '(no rows)'}", ""]
    if env:
        lines += [f"Machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs); python {env.get('python')}; "
                  f"torch {env.get('packages', {}).get('torch')}; transformers {env.get('packages', {}).get('transformers')}.", ""]
    lines += ["Latency: ms per batch (p50/p90 over the timed calls, after warm-up, fixed threads), inputs are real "
              "validation rows padded to the sequence length. Metric: the task's official metric on its validation "
              "split with a 95% bootstrap interval. Size: bytes on disk of the model files the backend loaded. "
              "Parity: max |logit difference| against PyTorch fp32 on the same rows (fp32 models on other backends).", ""]
    lines += reuse_note(rows)
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        lines += task_section(task, task_rows)
    return "\n".join(lines) + "\n"


def reuse_note(rows: list[dict]) -> list[str]:
    """Say so when some cells' timings come from the result cache (an earlier run on this machine)."""
    reused = {r["cell_id"]: r["measured_in_run"] for r in rows
              if r["status"] == "ok" and r.get("measured_in_run") not in (None, r["run_id"])}
    if not reused:
        return []
    cells = {r["cell_id"] for r in rows if r["status"] == "ok"}
    return [f"Reused measurements: {len(reused)} of {len(cells)} measured cells come from the result cache, measured "
            f"on this machine (same CPU, GPUs and library versions) in run(s) {', '.join(sorted(set(reused.values())))}. "
            "Timings from different runs can differ with the machine's load; `compbench run --remeasure` times every "
            "cell in one run.", ""]


def task_section(task: str, rows: list[dict]) -> list[str]:
    ok = [r for r in rows if r["status"] == "ok"]
    metric_name = next((r["metric_name"] for r in ok if r.get("metric_name")), "metric")
    lines = [f"## {task}", ""]
    teacher = next((r["lineage"][0] for r in ok if r.get("lineage")), None)
    if teacher:
        lines += [f"Teacher: {teacher['base']} fine-tuned on {teacher['train_rows']} rows, {teacher['steps']} steps "
                  f"({teacher['seconds']:.0f}s); data: {ok[0].get('data_source')}; evaluated on "
                  f"{ok[0].get('eval_rows')} rows of {ok[0].get('eval_split')}.", ""]
    if ok:
        lines += [markdown_table([_table_row(r, metric_name) for r in ok]), ""]
        lines += storage_notes(ok)
    not_ok = [r for r in rows if r["status"] != "ok"]
    if not_ok:
        lines += ["Not measured:", ""]
        for (cell, status, reason) in dict.fromkeys((r["cell_id"], r["status"], r["reason"]) for r in not_ok):
            lines.append(f"- `{cell}`: **{status}**: {reason}")
        lines.append("")
    return lines


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


def _table_row(row: dict, metric_name: str) -> dict:
    latency = row["latency_ms"]
    low, high = row["metric_ci95"] or (float("nan"), float("nan"))
    return {
        "pipeline": row["pipeline"],
        "backend": f"{row['backend']}:{row['device']}:{row['profile']}",
        "threads": row["threads"],
        "batch": row["batch_size"],
        "seq": row["seq_len"],
        f"{metric_name} (95% CI)": f"{row['metric']:.4f} [{low:.3f}, {high:.3f}]",
        "size MB": f"{row['size_bytes'] / 1e6:.1f}",
        "params M": f"{row['params'] / 1e6:.2f}",
        "non-zero M": f"{row['nonzero_params'] / 1e6:.2f}" if row.get("nonzero_params") is not None else "",
        "p50 ms": f"{latency['p50']:.2f}",
        "p90 ms": f"{latency['p90']:.2f}",
        "cold ms": f"{latency['cold']:.1f}",
        "n": latency["n"],
        "throughput /s": f"{row['throughput_per_s']:.1f}",
        "parity": "" if row.get("parity_max_abs_diff") is None else f"{row['parity_max_abs_diff']:.1e}",
    }
