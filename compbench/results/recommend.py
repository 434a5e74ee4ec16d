"""``compbench recommend``: the best model of a run under a quality constraint, from its rows alone.

For each task, at one shape (``--batch``, ``--seq``; default the smallest measured) and optionally one backend,
the candidates are the models whose metric drop against the fp32 teacher is within ``--max-drop``:

- ``1pt`` (or ``1``): at most one point of the metric on a 0-100 scale (accuracy 0.912 -> 0.902 is a 1-point
  drop); for a lower-is-better metric (perplexity) only a relative bound makes sense:
- ``2%``: at most 2% of the teacher's metric (perplexity: at most 2% higher).

A causal LM task where a model scored the text in other tokens than the teacher (another tokenizer, whose per-token
perplexity is in other units) is compared on bits per byte for every model, so that one bound means one thing.

By default the point estimate of the paired delta must be within the bound; ``--confident`` asks the end of its
95% interval to be (the drop is then within the bound with 97.5% confidence, for the rows measured). Among the
candidates the recommendation is the cheapest by the objective, ties going to the better metric; speed-ups within
the timing's resolution of the fastest (2%: what two copies of one model differ by) are ties, said in the output.
The candidates on the (cost, metric) Pareto front (with the same ties) are listed with it, so a user sees what a
little more cost buys. Rows timed while other processes kept the machine busy (``machine_load``) are not ranked by
a timing unless ``--include-busy``:

- ``latency``: the speed-up measured against the teacher on the suite's reference backend (the model as served
  today, PyTorch fp32 by default), timed interleaved with the model in the row's own job (``speedup_vs_reference``);
- ``decode``: a causal LM's full ``generate`` calls, likewise (``generation.speedup_vs_reference``);
- ``size``: deployed bytes.

Timings rank only through those measured ratios, never through medians of cells timed apart: a row without one
(a run from before, a reference that could not run) has no latency figure and is counted, not ranked. ``--against``
names the reference the ratios were measured against: it is accepted when it names the run's reference backend,
and refused otherwise (a ratio against another backend's cells would be a ratio of medians of separate cells).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compbench.common.errors import UsageError
from compbench.config.measure import Shape, shape_order
from compbench.results.analysis import analyse, timing_resolution, versus_reference_ratio
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
class Quality:
    """What a model is compared on (its metric, or bits per byte): its value, the teacher's, the delta and the
    delta's paired interval."""

    name: str
    value: float
    baseline: float
    delta: float
    low: float | None
    high: float | None


BITS_PER_BYTE = "bits_per_byte"


def basis_of(rows: list[dict]) -> str | None:
    """``bits_per_byte`` where a model of the task was compared on it (another tokenizer), else None: the metric."""
    return BITS_PER_BYTE if any(row.get("compared_on") == BITS_PER_BYTE for row in rows) else None


def quality_of(row: dict, basis: str | None) -> Quality | None:
    """The row's :class:`Quality` on ``basis`` (None: its metric); None where the row has no such comparison."""
    if basis == BITS_PER_BYTE:
        name, delta_key, value, baseline = (BITS_PER_BYTE, "bits_per_byte_delta", row.get(BITS_PER_BYTE),
                                            row.get("baseline_bits_per_byte"))
    else:
        name, delta_key, value, baseline = (row["metric_name"], "metric_delta", row.get("metric"),
                                            row.get("baseline_metric"))
    if value is None or baseline is None:
        return None
    delta = value - baseline if row.get(delta_key) is None else row[delta_key]
    return Quality(name, value, baseline, delta, row.get(f"{delta_key}_ci95_low"), row.get(f"{delta_key}_ci95_high"))


@dataclass(frozen=True)
class Choice:
    """One candidate: its analysed row, what it is compared on, its drop (point estimate and interval end) and its
    cost."""

    row: dict
    quality: Quality
    drop: float
    drop_bound: float | None
    cost: float


def _cost(row: dict, objective: str) -> float | None:
    """What the objective minimises: deployed bytes, or the model's time as a share of the reference's (1 over the
    measured speed-up against the teacher on the reference backend)."""
    if objective == "size":
        return row.get("size_bytes")
    ratio = versus_reference_ratio(row, objective)
    return 1.0 / ratio if ratio else None


def _default_objective(rows: list[dict]) -> str:
    return "decode" if any(row.get("generation") for row in rows) else "latency"


def _on_backend(row: dict, name: str) -> bool:
    """Whether ``row`` was measured on backend ``name`` (its label, or the backend's name)."""
    return name in (row["backend_label"], row.get("backend"))


def reference_labels(rows: list[dict]) -> list[str]:
    """The reference backends the run's rows were timed against (their labels), in order."""
    return list(dict.fromkeys(label for row in rows for versus in (row.get("speedup_vs_reference"),
                                                                   (row.get("generation") or {}).get(
                                                                       "speedup_vs_reference"))
                              if versus and (label := versus.get("reference"))))


def names_reference(name: str, label: str) -> bool:
    """Whether ``name`` names the reference backend ``label`` (``torch:cpu:default:t2``): the label, the backend's
    name, name and device, or the label without its thread count."""
    parts = label.split(":")
    short = ":".join(part for part in parts if not (part.startswith("t") and part[1:].isdigit()))
    return name in (label, parts[0], ":".join(parts[:2]), short)


def check_against(rows: list[dict], against: str | None) -> None:
    """``--against``: the ratios are measured against the run's reference backend; a name for it is accepted, any
    other backend is a usage error (it would need a ratio of medians of separate cells)."""
    if against is None:
        return
    labels = reference_labels(rows)
    if not labels:
        raise UsageError(f"--against {against}: this run's rows carry no speed-up measured against a reference "
                         "backend (a run from before compbench measured them); a ratio of medians of separate cells "
                         "is not computed: run the suite again (reference_backend: sets the reference)")
    if not any(names_reference(against, label) for label in labels):
        raise UsageError(f"--against {against}: the run's speed-ups were measured against the teacher on "
                         f"{', '.join(labels)} (the suite's reference_backend); a ratio against another backend's "
                         f"cells would divide medians of separate cells: set reference_backend: {{name: ...}} in the "
                         "suite and run it again")


def candidates(rows: list[dict], max_drop: MaxDrop, *, objective: str | None = None, backend: str | None = None,
               batch: int | None = None, seq: int | str | None = None, confident: bool = False,
               against: str | None = None, include_busy: bool = False) -> dict[str, dict]:
    """Per task: the shape used, the objective, the feasible choices (cheapest first), their Pareto front, the
    recommendation (the cheapest; None when no model is within the bound) and how many rows had no figure for the
    objective (module docstring). ``against`` is checked (``check_against``) and changes nothing else."""
    check_against(rows, against)
    analysed = [row for row in analyse(rows) if row["status"] == "ok"]
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
        choices, unmeasured, busy = [], [], []
        compared = [row for row in at_shape if row.get("baseline_metric") is not None and row.get("metric") is not None]
        basis = basis_of(compared)
        qualities = {id(row): quality_of(row, basis) for row in compared}
        for row in compared:
            quality = qualities[id(row)]
            if quality is None:         # rows without bits per byte, in a task compared on it
                continue
            worst = ((quality.low if higher_is_better(quality.name) else quality.high) if quality.low is not None
                     else None)
            drop = max_drop.drop(quality.name, quality.delta, quality.baseline)
            bound = None if worst is None else max_drop.drop(quality.name, worst, quality.baseline)
            cost = _cost(row, goal)
            if cost is None:
                unmeasured.append(row)
                continue
            if goal != "size" and timed_busy(row) and not include_busy:
                busy.append(row)
                continue
            if (bound if confident and bound is not None else drop) <= max_drop.value + 1e-12:
                choices.append(Choice(row, quality, drop, bound, float(cost)))
        choices.sort(key=lambda c: (c.cost, c.drop))
        resolution = 0.0 if goal == "size" else timing_resolution(at_shape, goal)
        best, tied = cheapest(choices, resolution)
        front = [choices[i] for i in front_order([c.cost for c in choices], [-c.drop for c in choices], resolution)]
        out[task] = {"shape": shape, "objective": goal, "choices": choices, "front": front,
                     "best": best, "tied": tied, "resolution": resolution, "busy": len(busy),
                     "unmeasured": len(unmeasured), "compared": len(compared), "basis": basis,
                     "incomparable": sum(quality is None for quality in qualities.values())}
    return out


def timed_busy(row: dict) -> bool:
    """Whether the row's cell was timed while other processes kept the machine busy (``machine_load``)."""
    return (row.get("machine_load") or {}).get("quiet") is False


def cheapest(choices: list[Choice], resolution: float) -> tuple[Choice | None, list[Choice]]:
    """The recommendation and the choices tied with it: costs within ``resolution`` (relative) of the cheapest are
    one cost (timings that close cannot be told apart), and among them the smaller drop wins (then the cost)."""
    if not choices:
        return None, []
    tied = [c for c in choices if c.cost <= choices[0].cost * (1 + resolution)]
    best = min(tied, key=lambda c: (c.drop, c.cost))
    return best, [c for c in tied if c is not best]


def _shape(rows: list[dict], batch: int | None, seq: int | str | None, task: str) -> Shape:
    shapes = sorted({(row["batch_size"], row["seq_len"]) for row in rows}, key=shape_order)
    wanted = [s for s in shapes if (batch is None or s[0] == batch) and (seq is None or s[1] == seq)]
    if not wanted:
        listed = ", ".join(f"--batch {b} --seq {s}" for b, s in shapes)
        raise UsageError(f"{task}: no rows at batch {batch or 'any'} x seq {seq or 'any'}; measured: {listed}")
    return wanted[0]


def _versus(row: dict, objective: str) -> dict:
    return ((row.get("generation") or {}).get("speedup_vs_reference") if objective == "decode"
            else row.get("speedup_vs_reference")) or {}


def _reference_text(row: dict, objective: str) -> str:
    """The measured speed-up against the reference backend's teacher, with its interval, in words."""
    versus = _versus(row, objective)
    what = "decoding " if objective == "decode" else ""
    if versus.get("ratio") is None:
        return f"no {what}speed-up measured against a reference backend"
    if versus.get("source") == "is-reference":
        return f"the reference itself (the teacher on {versus['reference']})"
    low, high = versus["ci95"]
    return (f"{what}{versus['ratio']:.2f}x the speed of the teacher on {versus['reference']} [{low:.2f}, {high:.2f}], "
            "measured interleaved")


def _own_text(row: dict, objective: str) -> str:
    """The speed-up against the teacher on the row's own backend, where it says something besides."""
    if row.get("is_baseline") or _versus(row, objective).get("source") in ("same-as-speedup", "is-reference"):
        return ""
    own = ((row.get("generation") or {}).get("speedup") or {}).get("ratio") if objective == "decode" \
        else row.get("speedup_p50")
    return f"; {own:.2f}x the teacher's on {row['backend_label']}" if own else ""


def _cost_text(choice: Choice, objective: str) -> str:
    row = choice.row
    if objective == "size":
        return f"{choice.cost / 1e6:.1f} MB, {_reference_text(row, 'latency')}"
    if objective == "decode":
        per_token = (row.get("generation") or {}).get("time_per_token_ms")
        timing = f" ({per_token:.2f} ms/token)" if per_token else ""
    else:
        timing = f" (p50 {row['latency_ms']['p50']:.2f} ms)" if (row.get("latency_ms") or {}).get("p50") else ""
    return f"{_reference_text(row, objective)}{timing}{_own_text(row, objective)}"


def describe(choice: Choice, objective: str, max_drop: MaxDrop) -> str:
    """One line for a choice: model, backend, metric with its delta, its speed-up measured against the teacher on the
    reference backend (and on its own backend, where that says something besides), its size against the teacher."""
    row, quality = choice.row, choice.quality
    interval = f" [{quality.low:+.4f}, {quality.high:+.4f}]" if quality.low is not None else ""
    smaller = row.get("size_ratio")
    size = f", {1 / smaller:.1f}x smaller" if smaller and smaller < 0.99 else ""
    unit = " pt" if max_drop.unit == "pt" else "%"
    change = f"drop {choice.drop:.2f}{unit}" if choice.drop > 0 else f"gain {-choice.drop:.2f}{unit}"
    return (f"{row['pipeline']} on {row['backend_label']}: {quality.name} {quality.value:.4f} "
            f"(delta {quality.delta:+.4f}{interval}; {change}), {_cost_text(choice, objective)}{size}")


def render(found: dict[str, dict], max_drop: MaxDrop, confident: bool) -> str:
    lines = []
    for task, result in found.items():
        batch, seq = result["shape"]
        rule = f"drop within {max_drop}" + (" (95% interval end)" if confident else "")
        if result.get("basis") == BITS_PER_BYTE:
            rule += (" of bits per byte: a model here has another tokenizer, whose per-token perplexity is in other "
                     "units")
        lines.append(f"{task} (batch {batch} x seq {seq}, cheapest by {result['objective']}, {rule}):")
        if result.get("incomparable"):
            lines.append(f"  {result['incomparable']} model(s) without bits per byte (rows of a run before it was "
                         "measured) left out")
        without = (f"{result['unmeasured']} without a speed-up measured against a reference backend" if
                   result["objective"] != "size" else f"{result['unmeasured']} without a size")
        if result.get("busy"):
            lines.append(f"  {result['busy']} model(s) timed while other processes kept the machine busy are not "
                         "ranked (their speed-ups may be off): run again on a quiet machine, or --include-busy")
        if result["best"] is None:
            if not result["compared"]:
                lines.append("  no model can be compared: no teacher (baseline) row at this shape on its backend")
            elif result["unmeasured"] == result["compared"]:
                lines.append(f"  no model can be ranked by {result['objective']}: {without} (rows of a run from "
                             "before compbench measured them; --objective size still ranks)")
            else:
                lines.append("  no model is within the bound" + (f" ({without})" if result["unmeasured"] else ""))
            continue
        lines.append(f"  recommended: {describe(result['best'], result['objective'], max_drop)}")
        for choice in result.get("tied", []):
            lines.append(f"  tied with it (speed-ups within the {result['resolution']:.0%} timing resolution: one "
                         f"speed; the smaller drop is recommended): {describe(choice, result['objective'], max_drop)}")
        others = [c for c in result["front"] if c is not result["best"] and c not in result.get("tied", [])]
        for choice in others:
            lines.append(f"  also on the front: {describe(choice, result['objective'], max_drop)}")
        lines.append(f"  {len(result['choices'])} model(s) within the bound"
                     + (f"; {without}" if result["unmeasured"] else ""))
    return "\n".join(lines) + "\n"


def as_records(found: dict[str, dict]) -> list[dict]:
    """The recommendations as plain records (``--format json``)."""
    def record(choice: Choice | None, result: dict) -> dict | None:
        if choice is None:
            return None
        row, quality = choice.row, choice.quality
        versus = _versus(row, "decode" if result["objective"] == "decode" else "latency")
        return {"pipeline": row["pipeline"], "backend_label": row["backend_label"], "metric_name": quality.name,
                "metric": quality.value, "metric_delta": quality.delta,
                "metric_delta_ci95": [quality.low, quality.high],
                "drop": choice.drop, "drop_bound": choice.drop_bound, "cost": choice.cost,
                "speedup_p50": row.get("speedup_p50"), "size_bytes": row.get("size_bytes"),
                "size_ratio": row.get("size_ratio"),
                "speedup_vs_reference": {key: versus.get(key) for key in ("ratio", "ci95", "reference", "source")}
                if versus.get("ratio") is not None else None}
    return [{"task": task, "batch_size": result["shape"][0], "seq_len": result["shape"][1],
             "objective": result["objective"], "recommended": record(result["best"], result),
             "front": [record(c, result) for c in result["front"]], "within_bound": len(result["choices"]),
             "tied": [record(c, result) for c in result.get("tied", [])], "timing_resolution": result.get("resolution"),
             "not_ranked_busy": result.get("busy", 0)}
            for task, result in found.items()]

