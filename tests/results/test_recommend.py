"""``compbench recommend`` on hand-made rows whose answer is known: the cheapest model within the drop (by the
speed-up measured against the reference backend's teacher, never by medians of separate cells), the Pareto front
beside it, bounds in points and percent, the interval's end with --confident, perplexity's direction, rows without
a measured speed-up, --against, and mistakes as one line with exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compbench.cli import main
from compbench.common.errors import UsageError
from compbench.results.recommend import MaxDrop, candidates, render
from compbench.results.rows import ResultsFile

from result_rows import row

REFERENCE = "torch:cpu:default:t2"
# The speed-ups measured against the teacher on the reference backend (torch fp32), interleaved in each row's job.
# They disagree with the ratios of the rows' medians on purpose (int8 on torch: 20 / 8 = 2.5 by medians, 4.5
# measured; on ORT 4.0 either way): recommend must rank by what was measured.
MEASURED = {"torch": {"baseline": 1.0, "pruned": 1.6, "int8": 4.5, "tiny": 6.0},
            "onnxruntime": {"baseline": 1.25, "pruned": 1.7, "int8": 4.0, "tiny": 6.5}}


def versus(ratio: float | None, source: str = "timed") -> dict:
    if source == "is-reference":
        return {"ratio": 1.0, "ci95": [1.0, 1.0], "pairs": 0, "interleaved": False, "resolution": 0.02,
                "reference": REFERENCE, "source": source}
    return {"ratio": ratio, "ci95": [ratio * 0.97, ratio * 1.03], "pairs": 40, "reference_p50_ms": 20.0,
            "interleaved": True, "resolution": 0.02, "reference": REFERENCE, "source": source}


def run_rows(measured: bool = True) -> list[dict]:
    """The teacher (90.0%, 20 ms), int8 (-1.0 pt, 8 ms; 5 ms on ORT), a pruned model (-0.5 pt, 12 ms) and a tiny
    one (-15 pt, 3 ms), at batch 1 and 32, on torch (the reference) and ORT; ``measured``: with the speed-ups
    measured against the reference (``MEASURED``), else as a run from before they were."""
    out = []
    for batch, scale in ((1, 1.0), (32, 20.0)):
        for backend, p50s in (("torch", {"int8": 8.0, "pruned": 12.0, "tiny": 3.0}),
                              ("onnxruntime", {"int8": 5.0, "pruned": 12.0, "tiny": 3.0})):
            def extra(pipeline: str) -> dict:
                if not measured:
                    return {}
                source = ("is-reference" if (backend, pipeline) == ("torch", "baseline") else
                          "same-as-speedup" if backend == "torch" else "timed")
                return {"speedup_vs_reference": versus(MEASURED[backend][pipeline], source)}
            out.append(row("baseline", 40, 20.0 * scale, backend=backend, batch=batch, **extra("baseline")))
            out.append(row("pruned", 42, p50s["pruned"] * scale, backend=backend, batch=batch, size=45_000_000,
                           **extra("pruned")))
            out.append(row("int8", 44, p50s["int8"] * scale, backend=backend, batch=batch, size=23_000_000,
                           **extra("int8")))
            out.append(row("tiny", 100, p50s["tiny"] * scale, backend=backend, batch=batch, size=10_000_000,
                           **extra("tiny")))
    return out


def write(folder, rows) -> None:
    results = ResultsFile(folder / "results.jsonl")
    for r in rows:
        results.append(r)


def test_the_cheapest_by_the_measured_speedup_within_the_drop_and_the_front_beside_it():
    found = candidates(run_rows(), MaxDrop.parse("1pt"))["sst2"]
    assert found["shape"] == (1, 128) and found["objective"] == "latency"
    best = found["best"].row
    # by the measured ratio (4.5x), not by the medians (ORT's 5 ms would win)
    assert (best["pipeline"], best["backend"]) == ("int8", "torch") and found["best"].drop == pytest.approx(1.0)
    # the front: int8/torch (4.5x, -1.0), pruned/ORT (1.7x, -0.5), the teacher on ORT (1.25x, 0); pruned on torch
    # (1.6x) and the teacher on torch (the reference, 1x) are dominated
    assert [(c.row["pipeline"], c.row["backend"], round(1 / c.cost, 6)) for c in found["front"]] == [
        ("int8", "torch", 4.5), ("pruned", "onnxruntime", 1.7), ("baseline", "onnxruntime", 1.25)]
    tighter = candidates(run_rows(), MaxDrop.parse("0.5"))["sst2"]["best"].row
    assert (tighter["pipeline"], tighter["backend"]) == ("pruned", "onnxruntime")
    by_size = candidates(run_rows(), MaxDrop.parse("1pt"), objective="size")["sst2"]["best"]
    assert by_size.row["pipeline"] == "int8" and by_size.cost == 23_000_000
    on_torch = candidates(run_rows(), MaxDrop.parse("1pt"), backend="torch", batch=32)["sst2"]
    assert on_torch["shape"] == (32, 128) and on_torch["best"].cost == pytest.approx(1 / 4.5)


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
                   predictions=None, labels=None, speedup_vs_reference=versus(20.0 / p50))
    rows = [lm("baseline", 50.0, 20.0), lm("int8", 51.0, 10.0), lm("int4", 60.0, 6.0), lm("better", 49.0, 30.0)]
    found = candidates(rows, MaxDrop.parse("2%"), objective="latency")["sst2"]
    assert found["best"].row["pipeline"] == "int8" and found["best"].drop == pytest.approx(2.0)
    assert [c.row["pipeline"] for c in found["front"]] == ["int8", "baseline", "better"]
    with pytest.raises(UsageError, match="perplexity has no points scale"):
        candidates(rows, MaxDrop.parse("1pt"))


def test_the_command_prints_the_choice_and_exits_1_when_none_fits(tmp_path):
    write(tmp_path, run_rows())
    write(tmp_path, run_rows())
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert done.exit_code == 0, done.output
    assert "recommended: int8 on torch:cpu:default: accuracy 0.8900" in done.output
    assert f"4.50x the speed of the teacher on {REFERENCE} [4.37, 4.63], measured interleaved" in done.output
    assert "3.9x smaller" in done.output
    assert "also on the front: pruned on onnxruntime:cpu:default" in done.output
    records = json.loads(CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--format",
                                                   "json"]).output)
    assert records[0]["recommended"]["pipeline"] == "int8" and len(records[0]["front"]) == 6   # each row twice
    assert records[0]["recommended"]["speedup_vs_reference"] == {"ratio": 4.5, "ci95": [4.5 * 0.97, 4.5 * 1.03],
                                                                 "reference": REFERENCE, "source": "same-as-speedup"}
    strict = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "0.1", "--backend", "torch"])
    assert strict.exit_code == 0 and "recommended: baseline" in strict.output   # the teacher itself fits any bound
    assert f"the reference itself (the teacher on {REFERENCE})" in strict.output


def test_rows_without_a_measured_speedup_are_not_ranked_by_latency_and_no_ratio_of_medians_is_shown(tmp_path):
    """A run from before: its rows carry no ``speedup_vs_reference``. Latency ranks nothing (a ratio of two cells'
    medians is never taken), said so, exit 1; size still ranks; a mixed run ranks only the measured rows."""
    write(tmp_path, run_rows(measured=False))
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert done.exit_code == 1 and "no model can be ranked by latency" in done.output, done.output
    assert "2.50x" not in done.output and "4.00x" not in done.output
    by_size = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--objective", "size"])
    assert by_size.exit_code == 0 and "recommended: int8" in by_size.output
    assert "no speed-up measured against a reference backend" in by_size.output
    mixed = [r for r in run_rows() if r["backend"] == "torch"] + [
        r for r in run_rows(measured=False) if r["backend"] == "onnxruntime"]
    found = candidates(mixed, MaxDrop.parse("1pt"))["sst2"]
    assert {c.row["backend"] for c in found["choices"]} == {"torch"} and found["unmeasured"] == 4


def test_against_names_the_reference_or_is_refused(tmp_path):
    """--against is kept for the reference the ratios were measured against (any name of it); another backend, or a
    run without measured ratios, is a one-line usage error (it would need a ratio of separate cells)."""
    write(tmp_path, run_rows())
    for name in ("torch", "torch:cpu", "torch:cpu:default", REFERENCE):
        done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--against", name])
        assert done.exit_code == 0 and "recommended: int8 on torch" in done.output, (name, done.output)
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--against", "onnxruntime"])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert f"--against onnxruntime: the run's speed-ups were measured against the teacher on {REFERENCE}" in done.output
    old = tmp_path / "old"
    old.mkdir()
    write(old, run_rows(measured=False))
    done = CliRunner().invoke(main, ["recommend", str(old), "--max-drop", "1pt", "--against", "torch"])
    assert done.exit_code == 2 and "carry no speed-up measured against a reference backend" in done.output


@pytest.mark.parametrize("args, expected", [
    (["--max-drop", "one point"], "--max-drop 'one point': give points (1pt, 0.5) or a percentage (2%)"),
    (["--max-drop", "1pt", "--backend", "tensorrt"], "--backend tensorrt: no ok rows on it"),
    (["--max-drop", "1pt", "--batch", "8"], "sst2: no rows at batch 8 x seq any; measured: --batch 1 --seq 128"),
    (["--max-drop", "1pt", "--against", "tensorrt"], "--against tensorrt: the run's speed-ups were measured against"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, expected):
    write(tmp_path, run_rows())
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), *args])
    assert done.exit_code == 2 and expected in done.output and "Traceback" not in done.output, done.output


def test_without_a_teacher_to_compare_with_it_says_so_and_exits_1(tmp_path):
    write(tmp_path, [r for r in run_rows() if r["pipeline"] != "baseline"])
    done = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt"])
    assert done.exit_code == 1 and "no teacher (baseline) row at this shape" in done.output, done.output


def test_speedups_within_the_timing_resolution_are_a_tie_the_smaller_drop_wins():
    """A model 1% faster than another (inside the 2% two copies of one model differ by) and a point less accurate is
    not recommended over it: they are one speed, said so in the output; one measurably faster (5%) is."""
    def at(pipeline, n_wrong, ratio):
        return row(pipeline, n_wrong, 10.0, speedup_vs_reference=versus(ratio))
    rows = [row("baseline", 40, 20.0, speedup_vs_reference=versus(1.0, "is-reference")),
            at("int8", 44, 2.02), at("pruned", 42, 2.00), at("slower", 40, 1.50)]
    found = candidates(rows, MaxDrop.parse("1pt"))["sst2"]
    assert found["best"].row["pipeline"] == "pruned"                      # by the cost alone int8 (2.02x) would win
    assert [c.row["pipeline"] for c in found["tied"]] == ["int8"] and found["resolution"] == 0.02
    assert [c.row["pipeline"] for c in found["front"]] == ["pruned", "slower"]   # int8 is no faster, and worse
    text = render({"sst2": found}, MaxDrop.parse("1pt"), False)
    assert "recommended: pruned" in text and "tied with it (speed-ups within the 2% timing resolution" in text
    rows[1] = at("int8", 44, 2.10)                                        # 5% faster: measurably so
    found = candidates(rows, MaxDrop.parse("1pt"))["sst2"]
    assert found["best"].row["pipeline"] == "int8" and not found["tied"]


def test_rows_timed_on_a_busy_machine_are_not_ranked_unless_asked(tmp_path):
    rows = run_rows()
    for r in rows:
        if r["pipeline"] == "int8" and r["backend"] == "torch":
            r["machine_load"] = {"quiet": False, "other_cores": 1.4}
    found = candidates(rows, MaxDrop.parse("1pt"))["sst2"]
    assert (found["best"].row["pipeline"], found["best"].row["backend"]) == ("int8", "onnxruntime")
    assert found["busy"] == 1
    assert "1 model(s) timed while other processes kept the machine busy are not ranked" in render(
        {"sst2": found}, MaxDrop.parse("1pt"), False)
    included = candidates(rows, MaxDrop.parse("1pt"), include_busy=True)["sst2"]
    assert (included["best"].row["pipeline"], included["best"].row["backend"]) == ("int8", "torch")
    by_size = candidates(rows, MaxDrop.parse("1pt"), objective="size")["sst2"]      # a size is not a timing
    assert by_size["busy"] == 0
    write(tmp_path, rows)
    result = CliRunner().invoke(main, ["recommend", str(tmp_path), "--max-drop", "1pt", "--include-busy"])
    assert result.exit_code == 0 and "recommended: int8 on torch" in result.output
