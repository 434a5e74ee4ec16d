"""Hand-made result rows whose answers are known, for the report and architecture tests."""

from __future__ import annotations

from compbench.results.rows import empty_row

N_ROWS = 400
LABELS = [i % 2 for i in range(N_ROWS)]


def predictions(n_wrong: int) -> list[int]:
    """Predictions with the first ``n_wrong`` rows wrong (accuracy = 1 - n_wrong / N_ROWS)."""
    return [1 - label if i < n_wrong else label for i, label in enumerate(LABELS)]


def latency(p50: float, spread: float | None = None) -> dict:
    spread = 0.05 * p50 if spread is None else spread
    return {"p10": p50 - spread, "p50": p50, "p90": p50 + spread, "p99": p50 + 2 * spread, "mean": p50,
            "std": spread / 2, "min": p50 - 1.5 * spread, "n": 100, "cold": 3 * p50}


def row(pipeline: str, n_wrong: int, p50: float, *, task: str = "sst2", backend: str = "torch",
        profile: str = "default", batch: int = 1, size: int = 90_000_000, spread: float | None = None,
        run_id: str = "r1", **extra) -> dict:
    values = dict(
        run_id=run_id, cell_id=f"{task}/{pipeline}/{backend}:cpu:{profile}", task=task, pipeline=pipeline, steps=[],
        backend=backend, profile=profile, device="cpu", precision="fp32", threads=2, batch_size=batch, seq_len=128,
        backend_label=f"{backend}:cpu:{profile}", fp32_backend_label=f"{backend}:cpu:{profile}",
        status="ok", metric_name="accuracy", metric=1 - n_wrong / N_ROWS, metric_ci95=[0.0, 1.0],
        metrics={"accuracy": 1 - n_wrong / N_ROWS}, latency_ms=latency(p50, spread),
        throughput_per_s=batch * 1000 / p50,
        size_bytes=size, params=22_700_000, nonzero_params=22_700_000, artifact="/a", artifact_hash=f"h-{pipeline}",
        predictions=predictions(n_wrong), labels=LABELS, eval_rows=N_ROWS, eval_split="validation",
        seeds={"run": 0, "data": 0, "teacher": 42, "bootstrap": 0}, measured_in_run=run_id,
        flops=int(2.9e9) * batch,
        roofline_peak={"device": "cpu", "threads": 2, "dtype": "float32", "size": 1024, "gflops": 100.0},
    )
    values.update(extra)
    return empty_row(**values)
