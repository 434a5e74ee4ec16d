"""Usage errors through the command line: one ``compbench: error:`` line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compbench.cli import EXIT_USAGE, main

VALID = "name: mini\ntasks: [sst2]\n"
BAD_SUITES = {
    "unknown task": ("name: x\ntasks: [sst]\n", "tasks[0]: unknown task 'sst'"),
    "unknown compressor": (VALID + "pipelines: [{name: p, steps: [{compressor: nosuch}]}]\n",
                           "pipelines[0].steps[0].compressor: unknown compressor 'nosuch'"),
    "unknown backend": (VALID + "backends: [{name: trch}]\n", "did you mean 'torch'?"),
    "unknown profile": (VALID + "backends: [{name: torch, profile: edg}]\n", "did you mean 'edge'?"),
    "unknown field": (VALID + "teacher: {batchsize: 8}\n", "teacher.batchsize: unknown field"),
    "invalid yaml": ("name: [x\n", "invalid YAML at line"),
}


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("COMPBENCH_DATA_DIR", raising=False)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="compbench")


def assert_usage_error(result, *fragments: str) -> str:
    """Exit 2 and exactly one ``compbench: error:`` line on stderr holding ``fragments``; nothing else there."""
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)      # not an unexpected exception caught by the runner
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("compbench: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("text, fragment", BAD_SUITES.values(), ids=BAD_SUITES.keys())
def test_bad_suite(tmp_path, command, text, fragment):
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    extra = ["--results-dir", tmp_path / "results"] if command == "run" else []
    assert_usage_error(invoke(command, suite, *extra), str(suite), fragment)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_missing_suite_file(tmp_path, command):
    assert_usage_error(invoke(command, tmp_path / "nope.yaml"), "nope.yaml does not exist")


def test_validate_prints_cells(tmp_path):
    suite = tmp_path / "ok.yaml"
    suite.write_text(VALID + "backends: [{name: torch}, {name: torch, profile: edge}]\n")
    result = invoke("validate", suite)
    assert result.exit_code == 0, result.output
    assert "ok, 2 cells: 1 tasks x 1 pipelines (baseline)" in result.stdout
    assert "sst2/baseline/torch:cpu:edge" not in result.stdout
    assert "sst2/baseline/torch:cpu:edge" in invoke("validate", suite, "--cells").stdout
    assert result.stderr == ""


def test_run_with_missing_data_dir_creates_nothing(tmp_path):
    suite = tmp_path / "ok.yaml"
    suite.write_text(VALID)
    results = tmp_path / "results"
    missing = tmp_path / "nonexistent"
    result = invoke("run", suite, "--data-dir", missing, "--results-dir", results, "--no-progress")
    assert_usage_error(result, str(missing), "does not exist")
    assert not results.exists()


def test_run_option_out_of_range_is_a_usage_error(tmp_path):
    suite = tmp_path / "ok.yaml"
    suite.write_text(VALID)
    result = invoke("run", suite, "--limit-train", "0", "--results-dir", tmp_path / "results")
    assert result.exit_code == EXIT_USAGE and "Traceback" not in result.output
    assert "--limit-train" in result.stderr
    assert not (tmp_path / "results").exists()


def test_report_without_results(tmp_path):
    assert_usage_error(invoke("report", tmp_path), str(tmp_path), "results.jsonl")


def test_list_shows_torch():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "torch" in result.stdout
    assert "compressors:" in result.stdout


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    """The same through a real interpreter, as a user sees it (CliRunner would hide a traceback)."""
    suite = tmp_path / "bad.yaml"
    suite.write_text(VALID + "backends: [{name: trch}]\n")
    done = subprocess.run([sys.executable, "-m", "compbench.cli", "validate", str(suite)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"compbench: error: {suite}: backends[0].name: unknown backend 'trch'; valid: "
                                        f"{done.stderr.split('valid: ', 1)[1].strip()}"]
    assert "did you mean 'torch'?" in done.stderr
