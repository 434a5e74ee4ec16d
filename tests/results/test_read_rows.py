"""Reading results.jsonl: a row cut off by a kill is skipped; any other line that is not a result row is a
usage error naming the file and the line (not a traceback in ``--resume`` or ``report``); ``row_problem``."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from compbench.cli import EXIT_USAGE, main
from compbench.common.errors import UsageError
from compbench.results.rows import IDENTITY_KEYS, ROW_KEYS, ResultsFile, read_rows, row_problem

from result_rows import row


def results_with(tmp_path, middle: bytes, *, last: bytes = b"") -> ResultsFile:
    """A results file: a good row, ``middle`` (its line), a good row, then ``last`` as written (no newline added)."""
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append(row("baseline", 0, 10.0))
    with open(results.path, "ab") as handle:
        handle.write(middle + b"\n")
    results.append(row("baseline", 0, 10.0, batch=32))
    with open(results.path, "ab") as handle:
        handle.write(last)
    return results


def bad_line(path, line: int) -> str:
    with pytest.raises(UsageError) as info:
        read_rows(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path} line {line}: not a result row ("), message
    assert message.endswith("each line must be a JSON object with the row keys (run_id, cell_id, ...): "
                            "remove or fix the line"), message
    return message


BAD_LINES = {
    # id: (the line, what the message shows of it)
    "a number": (b"42", "not a JSON object: 42"),
    "an empty object": (b"{}", "lacks run_id, cell_id, task and 20 more of the row keys: {}"),
    "a list": (b"[]", "not a JSON object: []"),
    "a string": (b'"row"', 'not a JSON object: "row"'),
    "null": (b"null", "not a JSON object: null"),
    "not JSON": (b'{"run_id": "r1", "cell_', """not JSON: '{"run_id": "r1", "cell_'"""),
    "invalid UTF-8": (b'{"run_id": "\xff\xfe"}', "byte 13 of the line is not UTF-8: b'{\"run_id\": \"\\xff"),
    "a row without a cell id": (json.dumps({**row("baseline", 0, 10.0), "cell_id": None}).encode(),
                                "cell_id null is not a string"),
    "a row missing keys": (json.dumps({k: v for k, v in row("baseline", 0, 10.0).items()
                                       if k not in ("status", "metric")}).encode(),
                           "lacks status, metric of the row keys"),
}


@pytest.mark.parametrize("line, shown", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_bad_line_in_the_middle_names_the_file_and_line(tmp_path, line, shown):
    results = results_with(tmp_path, line)
    assert shown in bad_line(results.path, 2)


def test_a_long_bad_line_is_shown_short(tmp_path):
    results = results_with(tmp_path, json.dumps(list(range(10_000))).encode())
    assert len(bad_line(results.path, 2)) < 400


def test_a_row_cut_off_at_the_end_is_skipped(tmp_path):
    results = results_with(tmp_path, b"", last=b'{"run_id": "r1", "cell_')
    with open(results.path, "rb") as handle:
        assert handle.read().count(b"\n\n") == 1          # the empty middle line is skipped too
    assert [r["batch_size"] for r in read_rows(results.path)] == [1, 32]


def test_a_row_cut_off_inside_a_character_is_skipped(tmp_path):
    cut = json.dumps(row("baseline", 0, 10.0, reason="déjà"), ensure_ascii=False).encode()
    cut = cut[:cut.index("é".encode()) + 1]                    # half of a two-byte character
    results = results_with(tmp_path, b"", last=cut)
    assert [r["batch_size"] for r in read_rows(results.path)] == [1, 32]


def test_a_complete_last_line_that_is_not_a_row_is_an_error(tmp_path):
    """A cut-off write has no newline; a whole line of garbage at the end is not a cut-off write."""
    assert "not JSON" in bad_line(results_with(tmp_path, b"", last=b"garbage\n").path, 4)
    assert "42" in bad_line(results_with(tmp_path / "b", b"", last=b"42").path, 4)   # whole JSON: not cut off


def test_rows_written_before_identity_keys_still_read(tmp_path):
    legacy = {k: v for k, v in row("baseline", 0, 10.0, precision="fp16",
                                   cell_id="sst2/baseline/torch:cpu:default:fp16").items()
              if k not in ("backend_label", "fp32_backend_label")}
    (tmp_path / "results.jsonl").write_text(json.dumps(legacy) + "\n")
    [read] = read_rows(tmp_path / "results.jsonl")
    assert (read["backend_label"], read["fp32_backend_label"]) == ("torch:cpu:default:fp16", "torch:cpu:default")


def test_report_command_on_a_bad_line_is_a_usage_error(tmp_path):
    results = results_with(tmp_path, b"42")
    result = CliRunner().invoke(main, ["report", str(tmp_path)], prog_name="compbench")
    assert result.exit_code == EXIT_USAGE and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"compbench: error: {results.path} line 2: not a result row")
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- row_problem


def test_row_problem_accepts_rows():
    assert row_problem(row("baseline", 0, 10.0)) is None
    assert row_problem(row("baseline", 0, 10.0, status="failed", metric=None, reason="x")) is None
    assert row_problem(row("baseline", 0, 10.0, metric=math.nan)) is None     # a metric can be undefined (NaN)
    legacy = {k: v for k, v in row("baseline", 0, 10.0).items() if k not in IDENTITY_KEYS}
    assert row_problem(legacy) is None


PROBLEMS = {
    # id: (changes to a good row, or a whole value; what the problem names)
    "not a dict": (42, "not a JSON object"),
    "a list": ([row("baseline", 0, 10.0)], "not a JSON object"),
    "empty": ({}, "lacks run_id, cell_id, task"),
    "missing keys": ({"drop": ["status", "metric"]}, "lacks status, metric"),
    "unknown status": ({"status": "done"}, 'status "done" is not one of ok, failed, skipped'),
    "cell id not a string": ({"cell_id": 7}, "cell_id 7 is not a string"),
    "cell id without its parts": ({"cell_id": "sst2-baseline"}, "task/pipeline/backend"),
    "task not a string": ({"task": None}, "task null is not a string"),
    "pipeline not a string": ({"pipeline": ["p"]}, "pipeline"),
    "batch size not an int": ({"batch_size": "32"}, 'batch_size "32" is not an integer'),
    "batch size a bool": ({"batch_size": True}, "batch_size true is not an integer"),
    "seq len a float": ({"seq_len": 128.0}, "seq_len 128.0 is neither an integer nor 'natural'"),
    "ok without a metric": ({"metric": None}, "an ok row's metric null is not a number"),
    "ok with a string metric": ({"metric": "0.9"}, 'metric "0.9" is not a number'),
}


@pytest.mark.parametrize("change, named", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_row_problem_says_what_is_wrong(change, named):
    value = change
    if isinstance(change, dict) and change:
        value = {k: v for k, v in row("baseline", 0, 10.0).items() if k not in change.get("drop", ())}
        value.update({k: v for k, v in change.items() if k != "drop"})
    problem = row_problem(value)
    assert problem is not None and named in problem, problem
    assert "\n" not in problem


def test_every_contract_key_is_required():
    for key in ROW_KEYS:
        assert key in (row_problem({k: v for k, v in row("baseline", 0, 10.0).items() if k != key}) or ""), key
