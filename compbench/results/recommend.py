"""``compbench recommend``: the best model of a run under a quality constraint, from its rows alone.

For each task, at one shape (``--batch``, ``--seq``; default the smallest measured) and optionally one backend,
the candidates are the models whose metric drop against the fp32 teacher is within ``--max-drop``:

- ``1pt`` (or ``1``): at most one point of the metric on a 0-100 scale (accuracy 0.912 -> 0.902 is a 1-point
  drop); for a lower-is-better metric (perplexity) only a relative bound makes sense:
- ``2%``: at most 2% of the teacher's metric (perplexity: at most 2% higher).

By default the point estimate of the paired delta must be within the bound; ``--confident`` asks the end of its
95% interval to be (the drop is then within the bound with 97.5% confidence, for the rows measured). Among the
candidates the recommendation is the cheapest by the objective (``latency``: median latency of the shape;
``size``: deployed bytes; ``decode``: a causal LM's time per output token), ties going to the better metric; the
candidates on the (cost, metric) Pareto front are listed with it, so a user sees what a little more cost buys.
Timings compare only within the run: the run's rows come from one machine, the speed-ups interleaved.

A speed-up is read against the teacher on the model's own backend (interleaved, with an interval). Deployments
are usually weighed against the teacher as it runs today, on another backend (PyTorch fp32): each choice also
gets its cost against the teacher's row on ``--against`` (default: the first backend the teacher was measured
on), a ratio of medians from separate cells of the run, not interleaved, and said so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compbench.common.errors import UsageError
from compbench.results.analysis import analyse
from compbench.results.pareto import front_order
from compbench.tasks.metrics import higher_is_better

OBJECTIVES = ("latency", "size", "decode")
_DROP = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>pt|pts|points?|%)?\s*$")


@dataclass(frozen=True)
class MaxDrop:
    """A bound on the metric's drop: ``value`` points (0-100 scale) or percent of the teacher's metric."""

    value: float
    unit: str               # "pt" or "%"

    @classmethod
    def parse(cls, text: str) -> "MaxDrop":
        match = _DROP.match(text or "")
        if not match:
            raise UsageError(f"--max-drop {text!r}: give points (1pt, 0.5) or a percentage (2%)")
        return cls(float(match["value"]), "%" if match["unit"] == "%" else "pt")

    def __str__(self) -> str:
        return f"{self.value:g}{' pt' if self.unit == 'pt' else '%'}"

    def drop(self, metric_name: str, delta: float, baseline: float) -> float:
        """The drop a ``delta`` (model - teacher) is, in this bound's unit (positive: worse than the teacher)."""
        worse = -delta if higher_is_better(metric_name) else delta
        if self.unit == "%":
            return 100.0 * worse / abs(baseline) if baseline else float("inf")
        if not higher_is_better(metric_name):
            raise UsageError(f"--max-drop {self}: {metric_name} has no points scale (lower is better); give a "
                             "percentage, e.g. --max-drop 2%")
        return 100.0 * worse


@dataclass(frozen=True)
class Choice:
    """One candidate: its analysed row, its drop (point estimate and interval end) and its cost."""

    row: dict
    drop: float
    drop_bound: float | None
    cost: float


def _cost(row: dict, objective: str) -> float | None:
    if objective == "size":
        return row.get("size_bytes")
    if objective == "decode":
        return (row.get("generation") or {}).get("time_per_token_ms")
    return (row.get("latency_ms") or {}).get("p50")


def _default_objective(rows: list[dict]) -> str:
    return "decode" if any(row.get("generation") for row in rows) else "latency"


def _on_backend(row: dict, name: str) -> bool:
    """Whether ``row`` was measured on backend ``name`` (its label, or the backend's name)."""
    return name in (row["backend_label"], row.get("backend"))


def candidates(rows: list[dict], max_drop: MaxDrop, *, objective: str | None = None, backend: str | None = None,
               batch: int | None = None, seq: int | None = None, confident: bool = False,
               against: str | None = None) -> dict[str, dict]:
    """Per task: the shape used, the objective, the feasible choices (cheapest first), their Pareto front, the
    recommendation (the cheapest; None when no model is within the bound) and the teacher's row on ``against``
    (module docstring) that each choice's cost is also read against."""
    analysed = [row for row in analyse(rows) if row["status"] == "ok"]
    teachers = [row for row in analysed if row["is_baseline"]]
    if against is not None and not any(_on_backend(row, against) for row in teachers):
        labels = sorted({row["backend_label"] for row in teachers})
        raise UsageError(f"--against {against}: the teacher has no ok rows on it; it was measured on: "
                         f"{', '.join(labels) or 'no backend'}")
    if backend is not None:
        labels = sorted({row["backend_label"] for row in analysed})
        analysed = [row for row in analysed if _on_backend(row, backend)]
        if not analysed:
            raise UsageError(f"--backend {backend}: no ok rows on it; backends in the run: {', '.join(labels)}")
    out = {}
    for task in dict.fromkeys(row["task"] for row in analysed):
        rows_of_task = [row for row in analysed if row["task"] == task]
        shape = _shape(rows_of_task, batch, seq, task)
        at_shape = [row for row in rows_of_task if (row["batch_size"], row["seq_len"]) == shape]
        goal = objective or _default_objective(at_shape)
        choices, unmeasured = [], []
        compared = [row for row in at_shape if row.get("baseline_metric") is not None and row.get("metric") is not None]
        for row in compared:
            delta = row["metric"] - row["baseline_metric"] if row.get("metric_delta") is None else row["metric_delta"]
            low, high = row.get("metric_delta_ci95_low"), row.get("metric_delta_ci95_high")
            worst = (low if higher_is_better(row["metric_name"]) else high) if low is not None else None
            drop = max_drop.drop(row["metric_name"], delta, row["baseline_metric"])
            bound = None if worst is None else max_drop.drop(row["metric_name"], worst, row["baseline_metric"])
            cost = _cost(row, goal)
            if cost is None:
                unmeasured.append(row)
                continue
            if (bound if confident and bound is not None else drop) <= max_drop.value + 1e-12:
                choices.append(Choice(row, drop, bound, float(cost)))
        choices.sort(key=lambda c: (c.cost, c.drop))
        front = [choices[i] for i in front_order([c.cost for c in choices], [-c.drop for c in choices])]
        deployed = [row for row in teachers if row["task"] == task and (row["batch_size"], row["seq_len"]) == shape
                    and (against is None or _on_backend(row, against))]
        out[task] = {"shape": shape, "objective": goal, "choices": choices, "front": front,
                     "best": choices[0] if choices else None, "unmeasured": len(unmeasured),
                     "compared": len(compared), "against": deployed[0] if deployed else None}
    return out


def against_ratio(choice: Choice, teacher: dict | None, objective: str) -> float | None:
    """How many times cheaper ``choice`` is than ``teacher`` (its row on the --against backend) by the objective,
    or None where that says nothing new (the same backend: the interleaved speed-up says it; size: the size ratio
    says it) or is unmeasured."""
    if teacher is None or objective == "size" or teacher["backend_label"] == choice.row["backend_label"]:
        return None
    cost = _cost(teacher, objective)
    return float(cost) / choice.cost if cost and choice.cost else None


def _shape(rows: list[dict], batch: int | None, seq: int | None, task: str) -> tuple[int, int]:
    shapes = sorted({(row["batch_size"], row["seq_len"]) for row in rows})
    wanted = [s for s in shapes if (batch is None or s[0] == batch) and (seq is None or s[1] == seq)]
    if not wanted:
        listed = ", ".join(f"--batch {b} --seq {s}" for b, s in shapes)
        raise UsageError(f"{task}: no rows at batch {batch or 'any'} x seq {seq or 'any'}; measured: {listed}")
    return wanted[0]


def _cost_text(choice: Choice, objective: str) -> str:
    if objective == "size":
        return f"{choice.cost / 1e6:.1f} MB"
    return f"{choice.cost:.2f} ms" + ("/token" if objective == "decode" else "")


def _speed_text(row: dict, objective: str) -> str:
    if objective == "decode":
        ratio = ((row.get("generation") or {}).get("speedup") or {}).get("ratio")
    else:
        ratio = row.get("speedup_p50")
    return f"{ratio:.2f}x the teacher's speed" if ratio else "the teacher's speed (it is the teacher)"


def describe(choice: Choice, objective: str, max_drop: MaxDrop, teacher: dict | None = None) -> str:
    """One line for a choice: model, backend, metric with its delta, cost, speed-up and size against the teacher
    (and its cost against ``teacher``, the teacher's row on the --against backend, where that is another)."""
    row = choice.row
    low, high = row.get("metric_delta_ci95_low"), row.get("metric_delta_ci95_high")
    interval = f" [{low:+.4f}, {high:+.4f}]" if low is not None else ""
    smaller = row.get("size_ratio")
    size = f", {1 / smaller:.1f}x smaller" if smaller and smaller < 0.99 else ""
    unit = " pt" if max_drop.unit == "pt" else "%"
    change = f"drop {choice.drop:.2f}{unit}" if choice.drop > 0 else f"gain {-choice.drop:.2f}{unit}"
    ratio = against_ratio(choice, teacher, objective)
    versus = (f"; {ratio:.2f}x faster than the teacher on {teacher['backend_label']} ({_cost(teacher, objective):.2f} "
              f"ms{'/token' if objective == 'decode' else ''}; medians of separate cells)" if ratio else "")
    return (f"{row['pipeline']} on {row['backend_label']}: {row['metric_name']} {row['metric']:.4f} "
            f"(delta {row.get('metric_delta') or 0.0:+.4f}{interval}; {change}), {_cost_text(choice, objective)}, "
            f"{_speed_text(row, objective)}{size}{versus}")


def render(found: dict[str, dict], max_drop: MaxDrop, confident: bool) -> str:
    lines = []
    for task, result in found.items():
        batch, seq = result["shape"]
        rule = f"drop within {max_drop}" + (" (95% interval end)" if confident else "")
        lines.append(f"{task} (batch {batch} x seq {seq}, cheapest by {result['objective']}, {rule}):")
        if result["best"] is None:
            lines.append("  no model is within the bound" if result["compared"] else
                         "  no model can be compared: no teacher (baseline) row at this shape on its backend")
            continue
        lines.append(f"  recommended: {describe(result['best'], result['objective'], max_drop, result['against'])}")
        others = [c for c in result["front"] if c is not result["best"]]
        for choice in others:
            lines.append(f"  also on the front: {describe(choice, result['objective'], max_drop, result['against'])}")
        lines.append(f"  {len(result['choices'])} model(s) within the bound"
                     + (f"; {result['unmeasured']} without a {result['objective']} figure" if result["unmeasured"]
                        else ""))
    return "\n".join(lines) + "\n"


def as_records(found: dict[str, dict]) -> list[dict]:
    """The recommendations as plain records (``--format json``)."""
    def record(choice: Choice | None, result: dict) -> dict | None:
        if choice is None:
            return None
        row, teacher = choice.row, result["against"]
        ratio = against_ratio(choice, teacher, result["objective"])
        return {"pipeline": row["pipeline"], "backend_label": row["backend_label"], "metric_name": row["metric_name"],
                "metric": row["metric"], "metric_delta": row.get("metric_delta"),
                "metric_delta_ci95": [row.get("metric_delta_ci95_low"), row.get("metric_delta_ci95_high")],
                "drop": choice.drop, "drop_bound": choice.drop_bound, "cost": choice.cost,
                "speedup_p50": row.get("speedup_p50"), "size_bytes": row.get("size_bytes"),
                "size_ratio": row.get("size_ratio"),
                "against": {"backend_label": teacher["backend_label"], "cost_ratio": ratio} if ratio else None}
    return [{"task": task, "batch_size": result["shape"][0], "seq_len": result["shape"][1],
             "objective": result["objective"], "recommended": record(result["best"], result),
             "front": [record(c, result) for c in result["front"]], "within_bound": len(result["choices"])}
            for task, result in found.items()]

