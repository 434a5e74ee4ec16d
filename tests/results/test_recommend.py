"""``compbench recommend`` on hand-made rows whose answer is known: the cheapest model within the drop, the
Pareto front beside it, bounds in points and percent, the interval's end with --confident, perplexity's
direction, and mistakes as one line with exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compbench.cli import main
from compbench.common.errors import UsageError
from compbench.results.recommend import MaxDrop, candidates
from compbench.results.rows import ResultsFile

from result_rows import row


def run_rows() -> list[dict]:
    """The teacher (90.0%, 20 ms), a copy within noise, int8 (-1.0 pt, 8 ms), int8 on ORT (-1.0 pt, 5 ms),
    a pruned model (-0.5 pt, 12 ms) and a tiny one (-15 pt, 3 ms), at batch 1 and 32."""
    out = []
    for batch, scale in ((1, 1.0), (32, 20.0)):
        for backend, p50s in (("torch", {"int8": 8.0, "pruned": 12.0, "tiny": 3.0}),
                              ("onnxruntime", {"int8": 5.0, "pruned": 12.0, "tiny": 3.0})):
            out.append(row("baseline", 40, 20.0 * scale, backend=backend, batch=batch))
            out.append(row("pruned", 42, p50s["pruned"] * scale, backend=backend, batch=batch, size=45_000_000))
            out.append(row("int8", 44, p50s["int8"] * scale, backend=backend, batch=batch, size=23_000_000))
            out.append(row("tiny", 100, p50s["tiny"] * scale, backend=backend, batch=batch, size=10_000_000))
    return out


def write(folder, rows) -> None:
    results = ResultsFile(folder / "results.jsonl")
    for r in rows:
        results.append(r)


def test_the_cheapest_within_the_drop_and_the_front_beside_it():
    found = candidates(run_rows(), MaxDrop.parse("1pt"))["sst2"]
    assert found["shape"] == (1, 128) and found["objective"] == "latency"
    best = found["best"].row
    assert (best["pipeline"], best["backend"]) == ("int8", "onnxruntime") and found["best"].drop == pytest.approx(1.0)
    # the front: int8/ORT (5 ms, -1.0), pruned (12 ms, -0.5, on either backend), the teacher (20 ms, 0)
    assert [(c.row["pipeline"], c.cost) for c in found["front"]] == [("int8", 5.0), ("pruned", 12.0),
                                                                      ("pruned", 12.0), ("baseline", 20.0),
                                                                      ("baseline", 20.0)]
    tighter = candidates(run_rows(), MaxDrop.parse("0.5"))["sst2"]["best"].row
    assert tighter["pipeline"] == "pruned"
    by_size = candidates(run_rows(), MaxDrop.parse("1pt"), objective="size")["sst2"]["best"]
    assert by_size.row["pipeline"] == "int8" and by_size.cost == 23_000_000
    on_torch = candidates(run_rows(), MaxDrop.parse("1pt"), backend="torch", batch=32)["sst2"]
    assert on_torch["shape"] == (32, 128) and on_torch["best"].cost == 160.0


def test_percent_bounds_and_the_intervals_end():
    # 1.0 pt of 90% is 1.11%: inside 1.2%, outside 1%
    assert candidates(run_rows(), MaxDrop.parse("1.2%"))["sst2"]["best"].row["pipeline"] == "int8"
    assert candidates(run_rows(), MaxDrop.parse("1%"))["sst2"]["best"].row["pipeline"] == "pruned"
    # the paired interval of int8's -1.0 pt reaches further: with --confident a bound of 1pt does not admit it
    confident = candidates(run_rows(), MaxDrop.parse("1pt"), confident=True)["sst2"]
    assert confident["best"].row["pipeline"] != "int8"
    assert all(c.drop_bound <= 1.0 for c in confident["choices"])


def test_perplexity_is_bounded_in_percent_and_its_direction_is_kept():
    def lm(pipeline, ppl, p50):
        return row(pipeline, 0, p50, metric_name="perplexity", metric=ppl, metrics={"perplexity": ppl},
                   predictions=None, labels=None)
    rows = [lm("baseline", 50.0, 20.0), lm("int8", 51.0, 10.0), lm("int4", 60.0, 6.0), lm("better", 49.0, 30.0)]
    found = candidates(rows, MaxDrop.parse("2%"), objective="latency")["sst2"]
    assert found["best"].row["pipeline"] == "int8" and found["best"].drop == pytest.approx(2.0)
    assert [c.row["pipeline"] for c in found["front"]] == ["int8", "baseline", "better"]
    with pytest.raises(UsageError, match="perplexity has no points scale"):
        candidates(rows, MaxDrop.parse("1pt"))


def test_the_command_prints_the_choice_and_exits_1_when_none_fits(tmp_path):
    write(tmp_path, run_rows())
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert done.exit_code == 0, done.output
    assert "recommended: int8 on onnxruntime:cpu:default: accuracy 0.8900" in done.output
    assert "4.00x the teacher's speed" in done.output and "3.9x smaller" in done.output
    records = json.loads(CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--format",
                                                   "json"]).output)
    assert records[0]["recommended"]["pipeline"] == "int8" and len(records[0]["front"]) == 5
    strict = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "0.1", "--backend", "torch"])
    assert strict.exit_code == 0 and "recommended: baseline" in strict.output   # the teacher itself fits any bound


def test_a_choice_on_another_backend_is_also_read_against_the_teacher_as_deployed(tmp_path):
    """int8 on ORT (5 ms) against the teacher on torch (the first backend it was measured on, 20 ms): 4x, said to
    be a ratio of separate cells; a choice on torch itself gets no second figure (its speed-up says it)."""
    found = candidates(run_rows(), MaxDrop.parse("1pt"))["sst2"]
    assert found["against"]["backend"] == "torch"
    write(tmp_path, run_rows())
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert ("4.00x faster than the teacher on torch:cpu:default (20.00 ms; medians of separate cells)"
            in done.output), done.output
    on_torch = [line for line in done.output.splitlines() if "on torch:cpu:default:" in line]
    assert on_torch and not any("faster than the teacher" in line for line in on_torch)
    records = json.loads(CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--against",
                                                   "onnxruntime", "--format", "json"]).output)
    pruned_on_torch = [r for r in records[0]["front"] if r["backend_label"].startswith("torch")][0]
    assert pruned_on_torch["against"] == {"backend_label": "onnxruntime:cpu:default", "cost_ratio": 20.0 / 12.0}
    assert records[0]["recommended"]["against"] is None      # int8 is on ORT itself


@pytest.mark.parametrize("args, expected", [
    (["--max-drop", "one point"], "--max-drop 'one point': give points (1pt, 0.5) or a percentage (2%)"),
    (["--max-drop", "1pt", "--backend", "tensorrt"], "--backend tensorrt: no ok rows on it"),
    (["--max-drop", "1pt", "--batch", "8"], "sst2: no rows at batch 8 x seq any; measured: --batch 1 --seq 128"),
    (["--max-drop", "1pt", "--against", "tensorrt"], "--against tensorrt: the teacher has no ok rows on it"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, expected):
    write(tmp_path, run_rows())
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), *args])
    assert done.exit_code == 2 and expected in done.output and "Traceback" not in done.output, done.output


def test_without_a_teacher_to_compare_with_it_says_so_and_exits_1(tmp_path):
    write(tmp_path, [r for r in run_rows() if r["pipeline"] != "baseline"])
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert done.exit_code == 1 and "no teacher (baseline) row at this shape" in done.output, done.output
