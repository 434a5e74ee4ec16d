"""What a run shows against its teacher, from the run folder alone: every pipeline's metric
against the teacher (baseline) and, optionally, against a reference pipeline (e.g. the
hard-label student), each delta with its paired-bootstrap 95% interval on the same validation
rows; its size and non-zero parameters; and the latency speed-up over the teacher per backend
and batch size (ratio of p50s; the pipeline's own p50 in brackets).

    python scripts/summary.py results/distill-sst2-... [--reference hard-label-3layer]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from compbench.metrics import paired_bootstrap_delta
from compbench.results import read_labels, read_rows


def delta_text(metric: str, reference: dict, row: dict, labels: np.ndarray) -> str:
    delta, interval = paired_bootstrap_delta(metric, np.asarray(reference["predictions"]), np.asarray(row["predictions"]), labels)
    real = "" if interval.low <= 0 <= interval.high else " *"
    return f"{100 * delta:+.2f} [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]{real}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--reference", help="a pipeline every other one is also compared with")
    args = parser.parse_args()
    rows = [r for r in read_rows(args.run_dir / "results.jsonl") if r["status"] == "ok"]
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        labels_by_split = read_labels(args.run_dir, task)
        scored = {r["pipeline"]: r for r in task_rows}                  # predictions are the same on every backend
        labels = np.asarray(labels_by_split[next(iter(scored.values()))["eval_split"]])
        teacher, reference = scored.get("baseline"), scored.get(args.reference)
        shapes = sorted({(r["backend"], r["profile"], r["batch_size"]) for r in task_rows})
        latency = {(r["pipeline"], r["backend"], r["profile"], r["batch_size"]): r["latency_ms"] for r in task_rows}
        print(f"## {task} ({len(labels)} {scored['baseline']['eval_split']} rows; deltas in points, * = interval excludes 0)\n")
        sizes = {(r["pipeline"], r["backend"], r["profile"]): r["size_bytes"] for r in task_rows}
        deployments = sorted({(b, p) for b, p, _ in shapes})
        header = ["pipeline", "metric [95% CI]", "params M (non-zero)", "vs teacher"] + ([f"vs {args.reference}"] if reference else [])
        header += [f"MB {b} {p}" for b, p in deployments] + [f"speed-up {b} {p} b{n}" for b, p, n in shapes]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for name, row in scored.items():
            low, high = row["metric_ci95"]
            cells = [name, f"{row['metric']:.4f} [{low:.3f}, {high:.3f}]",
                     f"{row['params'] / 1e6:.1f} ({row['nonzero_params'] / 1e6:.1f})",
                     delta_text(row["metric_name"], teacher, row, labels) if teacher and name != "baseline" else ""]
            if reference:
                cells.append(delta_text(row["metric_name"], reference, row, labels) if name != args.reference else "")
            cells += [f"{sizes[(name, b, p)] / 1e6:.1f}" if (name, b, p) in sizes else "" for b, p in deployments]
            for backend, profile, batch in shapes:
                base, mine = latency.get(("baseline", backend, profile, batch)), latency.get((name, backend, profile, batch))
                cells.append(f"{base['p50'] / mine['p50']:.2f}x ({mine['p50']:.1f} ms)" if base and mine else "")
            print("| " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
