"""Sizes and counts a run could not survive are refused when the suite is read: one line naming the field, the
value and what is valid (not an OverflowError or MemoryError minutes into the run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compbench.cli import EXIT_USAGE, main
from compbench.common.errors import UsageError
from compbench.config import limits
from compbench.config.limits import MAX_BATCH_SIZE, MAX_SEED
from compbench.config.loading import load_suite
from compbench.config.measure import MeasureConfig

MINIMAL = "name: mini\ntasks: [sst2]\n"
REPO_ROOT = Path(__file__).resolve().parents[2]


def usage_error(tmp_path: Path, text: str) -> str:
    """The one-line message of the UsageError that loading a suite of ``text`` raises (it names the file)."""
    path = tmp_path / "suite.yaml"
    path.write_text(MINIMAL + text)
    with pytest.raises(UsageError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert "Input should" not in message and "Unable to parse" not in message, message   # pydantic's wording
    return message


TOO_BIG = {
    # id: (suite text, fragments the one-line message must contain)
    "batch size 2**32": ("measure: {batch_sizes: [1, 4294967296]}\n",
                         ["measure.batch_sizes[1]: must be less than or equal to 65536", "got 4294967296"]),
    "batch size 1e23": ("measure: {batch_sizes: [1.0e+23]}\n",
                        ["measure.batch_sizes[0]: must be less than or equal to 65536", "got 1e+23"]),
    "batch size 1e23 without a dot": ("measure: {batch_sizes: [1e23]}\n",          # YAML reads it as a string
                                      ["measure.batch_sizes[0]: must be an integer", "got '1e23'"]),
    "batch size true": ("measure: {batch_sizes: [true]}\n", ["measure.batch_sizes[0]: must be an integer",
                                                            "got true"]),
    "eval batch size": ("measure: {eval_batch_size: 4294967296}\n",
                        ["measure.eval_batch_size: must be less than or equal to 65536", "got 4294967296"]),
    "training batch size": ("teacher: {batch_size: 1.0e+23}\n",
                            ["teacher.batch_size: must be less than or equal to 65536", "got 1e+23"]),
    "sequence length": ("measure: {seq_lens: [1.0e+23]}\n",
                        ["measure.seq_lens[0]: must be a whole number of tokens 8..32768 (a classifier's: ..512) or "
                         "'natural'", "got 1e+23"]),
    "max_seq_len": ("teacher: {max_seq_len: 4294967296}\n",
                    ["teacher.max_seq_len: must be less than or equal to 512", "got 4294967296"]),
    "max_iters": ("measure: {max_iters: 1.0e+300}\n",
                  ["measure.max_iters: must be less than or equal to 1000000", "got 1e+300"]),
    "warmup_iters": ("measure: {warmup_iters: 4294967296}\n", ["measure.warmup_iters:", "1000000"]),
    "min_iters": ("measure: {min_iters: 4294967296}\n", ["measure.min_iters:", "1000000"]),
    "bootstrap_resamples": ("measure: {bootstrap_resamples: 1000000000000}\n",
                            ["measure.bootstrap_resamples: must be less than or equal to 1000000"]),
    "limit_train": ("data: {limit_train: 1.0e+23}\n", ["data.limit_train: must be less than or equal to", "1e+23"]),
    "limit_eval": ("data: {limit_eval: 4294967296000}\n", ["data.limit_eval: must be less than or equal to"]),
    "epochs": ("teacher: {epochs: 1.0e+23}\n", ["teacher.epochs: must be less than or equal to"]),
    "max_steps": ("teacher: {max_steps: 1.0e+23}\n", ["teacher.max_steps: must be less than or equal to"]),
    "seed too large": ("seed: 4294967296\n", ["seed: must be less than or equal to 4294967295"]),
    "negative seed": ("data: {seed: -1}\n", ["data.seed: must be greater than or equal to 0", "got -1"]),
    "threads": ("backends: [{name: torch, threads: 4294967296}]\n",
                ["backends[0].threads: must be less than or equal to", "got 4294967296"]),
    "infinite max_seconds": ("measure: {max_seconds: .inf}\n", ["measure.max_seconds: must be a finite number",
                                                                "got inf"]),
    "nan learning rate": ("teacher: {learning_rate: .nan}\n", ["teacher.learning_rate: must be a finite number"]),
    "huge max_seconds": ("measure: {max_seconds: 1.0e+300}\n",
                         ["measure.max_seconds: must be less than or equal to 86400", "got 1e+300"]),
    "infinite cell timeout": ("runner: {cell_timeout: .inf}\n", ["runner.cell_timeout: must be a finite number"]),
    "huge build timeout": ("runner: {build_timeout: 1.0e+300}\n",
                           ["runner.build_timeout: must be less than or equal to 604800"]),
}


@pytest.mark.parametrize("text, fragments", TOO_BIG.values(), ids=TOO_BIG.keys())
def test_sizes_out_of_range_give_one_line(tmp_path, text, fragments):
    message = usage_error(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_largest_allowed_values_validate(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(MINIMAL + f"seed: {MAX_SEED}\nteacher: {{batch_size: {MAX_BATCH_SIZE}, max_seq_len: 512}}\n"
                    f"measure: {{batch_sizes: [1, {MAX_BATCH_SIZE}], seq_lens: [8, 512]}}\n")
    suite = load_suite(path)
    assert suite.measure.batch_sizes == [1, MAX_BATCH_SIZE] and suite.seed == MAX_SEED


def test_a_shape_whose_inputs_exceed_the_memory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "machine_memory_bytes", lambda: 64 * 2**20)         # a 64 MiB machine
    message = usage_error(tmp_path, "measure: {batch_sizes: [1, 8192], seq_lens: [8, 512]}\n")
    assert "measure.batch_sizes: batch 8192 x 512 tokens needs 96 MiB for its input tensors alone" in message
    assert "64 MiB" in message and "smaller batch_sizes or seq_lens" in message, message
    fits = tmp_path / "fits.yaml"
    fits.write_text(MINIMAL + "measure: {batch_sizes: [1, 32], seq_lens: [128], max_iters: 1000}\n")
    assert load_suite(fits).measure.batch_sizes == [1, 32]


def test_a_bootstrap_that_cannot_fit_in_memory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "machine_memory_bytes", lambda: 2**30)               # a 1 GiB machine
    message = usage_error(tmp_path, "measure: {max_iters: 1000000, bootstrap_resamples: 10000}\n")
    assert "measure.bootstrap_resamples:" in message and "max_iters" in message and "1 GiB" in message, message


def test_memory_unknown_skips_the_estimate(monkeypatch):
    monkeypatch.setattr(limits, "machine_memory_bytes", lambda: None)
    assert MeasureConfig(batch_sizes=[MAX_BATCH_SIZE], seq_lens=[512]).batch_sizes == [MAX_BATCH_SIZE]


def test_machine_memory_is_known_here():
    assert limits.machine_memory_bytes() > 2**20


def test_validate_command_refuses_a_huge_batch_size_in_one_line(tmp_path):
    suite = tmp_path / "huge.yaml"
    suite.write_text(MINIMAL + "measure: {batch_sizes: [4294967296]}\n")
    result = CliRunner().invoke(main, ["validate", str(suite)], prog_name="compbench")
    assert result.exit_code == EXIT_USAGE and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.splitlines() == [
        f"compbench: error: {suite}: measure.batch_sizes[0]: must be less than or equal to 65536; got 4294967296"]


def test_validate_in_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    suite = tmp_path / "huge.yaml"
    suite.write_text(MINIMAL + "measure: {batch_sizes: [1.0e+23]}\n")
    done = subprocess.run([sys.executable, "-m", "compbench.cli", "validate", str(suite)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"compbench: error: {suite}: measure.batch_sizes[0]: must be less than or equal to 65536; got 1e+23"]
