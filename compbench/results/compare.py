"""``compbench compare RUN_A RUN_B``: for each measurement present in both runs, how metric,
latency and size changed, flagged where the change exceeds the noise.

- Metric: when both rows scored the same labelled rows, the change gets a 95% paired bootstrap
  interval and is flagged when it excludes zero; otherwise it is flagged only when the two
  runs' 95% intervals do not overlap.
- Latency: B's median over A's with a 95% bootstrap interval over both runs' timed calls. That interval sees only
  the calls within each run, never the machine's drift between runs (the same teacher's median moved 41.1 -> 27.7
  -> 32.7 ms over three runs here), so it is not what flags a change: a model's latency is flagged as changed when
  its own interleaved speed-up against the teacher on its backend moved (the two runs' 95% intervals disjoint;
  drift cancels within each run); the teacher's own change is the drift between the runs, shown and never
  flagged (``latency_flag_basis`` says which). Rows measured before interleaving: p50 over p50, flagged when the
  two p10..p90 ranges do not overlap.
- Speed-up against the reference: each run's own measured ratio against the teacher on its reference backend
  (interleaved in its own jobs, so machine drift between the runs cancels within each), A's and B's with their
  intervals, flagged when the two intervals do not overlap and both were measured against the same reference;
  "—" for a row without one (a run from before).
- Size: B's bytes over A's, flagged on any change (sizes are exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from compbench.common.statistics import TIMING_RESOLUTION, median_ratio
from compbench.results.analysis import (
    change_mark,
    latency_range,
    paired_delta,
    ranges_overlap,
    ratio,
    reference_columns,
)
from compbench.results.report import RunReport, markdown_table

MATCH_KEYS = ("task", "pipeline", "backend_label", "batch_size", "seq_len")


def _ok_by_key(rows: list[dict]) -> dict[tuple, dict]:
    """ok rows by ``MATCH_KEYS``."""
    return {tuple(r[key] for key in MATCH_KEYS): r for r in rows if r["status"] == "ok"}


def compare_rows(row_a: dict, row_b: dict) -> dict:
    """The change from ``row_a`` to ``row_b`` (one measurement in each run)."""
    out = {"metric_name": row_a["metric_name"], "metric_a": row_a["metric"], "metric_b": row_b["metric"],
           "metric_change": row_b["metric"] - row_a["metric"], "metric_change_ci95_low": None,
           "metric_change_ci95_high": None, "metric_paired": False}
    delta = paired_delta(row_b, row_a)
    if delta is not None:
        out.update(metric_change_ci95_low=delta.low, metric_change_ci95_high=delta.high, metric_paired=True,
                   metric_change_significant=delta.significant)
    else:
        out["metric_change_significant"] = ranges_overlap(tuple(row_a["metric_ci95"] or ()) or None,
                                                          tuple(row_b["metric_ci95"] or ()) or None) is False
    out.update(p50_ms_a=row_a["latency_ms"]["p50"], p50_ms_b=row_b["latency_ms"]["p50"], **latency_change(row_a, row_b))
    out.update(reference_change(row_a, row_b))
    out.update(size_bytes_a=row_a["size_bytes"], size_bytes_b=row_b["size_bytes"],
               size_ratio=ratio(row_b["size_bytes"], row_a["size_bytes"]),
               size_changed=row_a["size_bytes"] != row_b["size_bytes"],
               same_artifact=row_a.get("artifact_hash") == row_b.get("artifact_hash"))
    return out


def latency_change(row_a: dict, row_b: dict) -> dict:
    """B's median latency over A's with a 95% bootstrap interval over both runs' calls (unpaired), and whether the
    model's latency changed, judged on what carries between runs (module docstring): its own interleaved speed-up
    against the teacher (``own-speedup``: the intervals disjoint); for the teacher itself, never (``drift``: its
    change is the machine's between the runs). Rows without their timed calls: p50 over p50, flagged when the
    p10-p90 ranges do not overlap (``ranges``)."""
    samples_a, samples_b = row_a.get("latency_samples_ms"), row_b.get("latency_samples_ms")
    if not (samples_a and samples_b):
        latency_a, latency_b = row_a["latency_ms"], row_b["latency_ms"]
        return {"latency_ratio": ratio(latency_b["p50"], latency_a["p50"]), "latency_ratio_ci95_low": None,
                "latency_ratio_ci95_high": None, "latency_flag_basis": "ranges",
                "latency_change_significant": ranges_overlap(latency_range(latency_a),
                                                             latency_range(latency_b)) is False}
    change = median_ratio(samples_b, samples_a, paired=False, seed=(row_a.get("seeds") or {}).get("bootstrap", 0))
    out = {"latency_ratio": change.value, "latency_ratio_ci95_low": change.low, "latency_ratio_ci95_high": change.high}
    own_a, own_b = (row.get("speedup") or {} for row in (row_a, row_b))
    if own_a.get("ci95") and own_b.get("ci95"):
        moved = ranges_overlap(tuple(own_a["ci95"]), tuple(own_b["ci95"])) is False
        return {**out, "latency_flag_basis": "own-speedup", "latency_change_significant": moved,
                "speedup_a": own_a["ratio"], "speedup_b": own_b["ratio"]}
    if row_a.get("is_baseline") or row_a["pipeline"] == "baseline":
        return {**out, "latency_flag_basis": "drift", "latency_change_significant": None}
    # a model timed without its teacher in one of the runs: only a change beyond the interval and the resolution
    return {**out, "latency_flag_basis": "calls", "latency_change_significant": change.beyond(1.0, TIMING_RESOLUTION)}


def reference_change(row_a: dict, row_b: dict) -> dict:
    """Each run's own speed-up against the teacher on its reference backend (measured interleaved in its jobs), with
    the intervals, and whether it changed: the two intervals disjoint, against the same reference (None: not both
    measured, or against different references)."""
    out = {}
    for side, row in (("a", row_a), ("b", row_b)):
        columns = reference_columns(row)
        out.update({f"speedup_vs_reference_{side}": columns["speedup_vs_reference_p50"],
                    f"speedup_vs_reference_ci95_low_{side}": columns["speedup_vs_reference_ci95_low"],
                    f"speedup_vs_reference_ci95_high_{side}": columns["speedup_vs_reference_ci95_high"],
                    f"reference_backend_label_{side}": columns["reference_backend_label"]})
    both = all(out[f"speedup_vs_reference_ci95_low_{side}"] is not None for side in "ab")
    same = out["reference_backend_label_a"] == out["reference_backend_label_b"]
    out["speedup_vs_reference_change_significant"] = (
        ranges_overlap(*((out[f"speedup_vs_reference_ci95_low_{side}"], out[f"speedup_vs_reference_ci95_high_{side}"])
                         for side in "ab")) is False if both and same else None)
    return out


class RunComparison:
    def __init__(self, name_a: str, rows_a: list[dict], name_b: str, rows_b: list[dict],
                 env_a: dict | None = None, env_b: dict | None = None) -> None:
        self.name_a, self.name_b = name_a, name_b
        ok_a, ok_b = _ok_by_key(rows_a), _ok_by_key(rows_b)
        self.records = [
            {**dict(zip(MATCH_KEYS, key)), **compare_rows(ok_a[key], ok_b[key])} for key in ok_a if key in ok_b
        ]
        self.only_a = [_key_text(key) for key in ok_a if key not in ok_b]
        self.only_b = [_key_text(key) for key in ok_b if key not in ok_a]
        self.same_machine = _machine(env_a) == _machine(env_b)

    @classmethod
    def from_run_dirs(cls, run_a: Path, run_b: Path) -> "RunComparison":
        a, b = RunReport.from_run_dir(run_a), RunReport.from_run_dir(run_b)
        return cls(Path(run_a).name, a.rows, Path(run_b).name, b.rows, a.env, b.env)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)

    def render(self, fmt: str) -> str:
        if fmt == "csv":
            return self.frame().to_csv(index=False)
        if fmt == "json":
            return json.dumps({"run_a": self.name_a, "run_b": self.name_b, "same_machine": self.same_machine,
                               "cells": self.records, "only_in_a": self.only_a, "only_in_b": self.only_b}, indent=1)
        return self.markdown()

    def markdown(self) -> str:
        lines = [f"# compbench compare: {self.name_a} → {self.name_b}", "",
                 f"{len(self.records)} measurements in both runs; {len(self.only_a)} only in {self.name_a}, "
                 f"{len(self.only_b)} only in {self.name_b}.", "",
                 "Metric change: B − A with a 95% paired bootstrap interval where both scored the same rows; "
                 "▲/▼ when the change is beyond the noise (▲ better: for perplexity a fall). Latency: B's median "
                 "/ A's median with a 95% bootstrap interval over both runs' timed calls; that interval cannot "
                 "see the machine's drift between runs, so ▲/▼ (▼ = slower) marks a model whose own interleaved "
                 "speed-up against the teacher on its backend moved (the two runs' 95% intervals disjoint), and "
                 "the teacher's own change is the drift, marked (drift) and never flagged (older rows: when the "
                 "p10–p90 ranges do not overlap). Speed-up vs reference: each run's own ratio against the teacher "
                 "on its reference backend, measured interleaved in the run, A → B, ▲/▼ when the two 95% "
                 "intervals do not overlap (— where a run did not measure it). Size: B / A, ◆ when the bytes "
                 "differ.", ""]
        if not self.same_machine:
            lines += ["**The two runs were made on different machines or library versions** (env.json differs): "
                      "latency changes compare machines, not models.", ""]
        if self.records:
            lines += [markdown_table([self._table_row(r) for r in self.records]), ""]
        for name, keys in ((self.name_a, self.only_a), (self.name_b, self.only_b)):
            if keys:
                lines += [f"Only in {name}: " + ", ".join(f"`{k}`" for k in keys), ""]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _table_row(record: dict) -> dict:
        change = record["metric_change"]
        mark = change_mark(record["metric_name"], change, record["metric_change_significant"])
        interval = (f" [{record['metric_change_ci95_low']:+.3f}, {record['metric_change_ci95_high']:+.3f}]"
                    if record["metric_paired"] else " (unpaired)")
        slower = (record["speedup_b"] < record["speedup_a"] if record.get("latency_flag_basis") == "own-speedup"
                  else record["latency_ratio"] is not None and record["latency_ratio"] > 1)
        latency_mark = ((" ▼" if slower else " ▲") if record["latency_change_significant"] else
                        " (drift)" if record.get("latency_flag_basis") == "drift" else "")
        return {
            "pipeline": record["pipeline"], "backend": record["backend_label"],
            "shape": f"{record['task']} {record['batch_size']}×{record['seq_len']}",
            f"{record['metric_name']} A → B": f"{record['metric_a']:.4f} → {record['metric_b']:.4f}",
            "change (95% CI)": f"{change:+.4f}{interval}{mark}",
            "p50 ms A → B": f"{record['p50_ms_a']:.2f} → {record['p50_ms_b']:.2f}",
            "latency B/A (95% CI)": f"{record['latency_ratio']:.2f}×" + (
                f" [{record['latency_ratio_ci95_low']:.2f}, {record['latency_ratio_ci95_high']:.2f}]"
                if record["latency_ratio_ci95_low"] is not None else "") + latency_mark,
            "speed-up vs reference A → B": _versus_text(record),
            "size B/A": f"{record['size_ratio']:.2f}×" + (" ◆" if record["size_changed"] else ""),
        }


def _versus_text(record: dict) -> str:
    """``2.10× → 2.31× ▲`` (each run's own measured ratio against its reference); — for a run without one."""
    a, b = record["speedup_vs_reference_a"], record["speedup_vs_reference_b"]
    text = " → ".join("—" if value is None else f"{value:.2f}×" for value in (a, b))
    if record["speedup_vs_reference_change_significant"]:
        text += " ▲" if b > a else " ▼"
    if a is not None and b is not None and record["reference_backend_label_a"] != record["reference_backend_label_b"]:
        text += f" (against {record['reference_backend_label_a']} → {record['reference_backend_label_b']})"
    return text


def _key_text(key: tuple) -> str:
    task, pipeline, label, batch, seq = key
    return f"{task}/{pipeline}/{label} {batch}×{seq}"


def _machine(env: dict | None) -> tuple | None:
    if not env:
        return None
    return (env.get("cpu"), env.get("cpu_count"), json.dumps(env.get("gpus"), sort_keys=True),
            json.dumps(env.get("packages"), sort_keys=True))
