"""A run's settings: resolved once from the suite and the command line, recorded, and resumed with what
the command line may change; names that would break cell ids refused; "all cores" means this process's."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from compbench.common.errors import UsageError
from compbench.config.backends import BackendOptions
from compbench.config.loading import validate_suite
from compbench.config.settings import resolve_settings, resume_settings

SUITE = {"name": "s", "tasks": ["sst2"], "data": {"limit_train": 100}, "runner": {"cell_timeout": 60}}


def settings(tmp_path: Path, **overrides):
    suite = validate_suite(SUITE, "s.yaml")
    return resolve_settings(suite, overrides, suite_file=tmp_path / "suite.yaml", base_dir=tmp_path,
                            run_dir=tmp_path / "run")


def test_the_command_line_wins_over_the_suite_and_the_suite_over_the_defaults(tmp_path):
    plain = settings(tmp_path)
    assert (plain.limit_train, plain.cell_timeout, plain.executor, plain.isolation) == (100, 60, "local", "subprocess")
    given = settings(tmp_path, limit_train=10, cell_timeout=5.0, executor="ray", fail_fast=True)
    assert (given.limit_train, given.cell_timeout, given.executor, given.fail_fast) == (10, 5.0, "ray", True)
    with pytest.raises(UsageError, match="unknown run setting"):
        settings(tmp_path, celltimeout=3)


def test_a_resume_can_run_a_ray_run_locally_and_keeps_what_it_may_not_change(tmp_path):
    """The bug: --resume --executor local could not override a run started with ray (local was the default)."""
    suite = validate_suite(SUITE, "s.yaml")
    record = {"settings": asdict(settings(tmp_path, executor="ray", address="auto", fail_fast=True))}
    resumed = resume_settings(record, {"executor": "local", "address": None, "cell_timeout": None}, suite)
    assert resumed.executor == "local" and resumed.address == "auto" and resumed.fail_fast
    assert resumed.limit_train == 100 and resume_settings(record, {}, suite).executor == "ray"


def test_a_resume_of_a_run_json_written_before_settings_were_one_object(tmp_path):
    suite = validate_suite(SUITE, "s.yaml")
    old = {"settings": {"suite_file": "x", "base_dir": "y", "run_dir": "z", "run_id": "r", "cache_dir": "c",
                        "data_dir": None, "limit_train": None, "limit_eval": None},
           "executor": {"executor": "local", "address": None, "isolation": "inline", "cell_timeout": 60,
                        "build_timeout": None, "build_cpus": None, "fail_fast": False, "remeasure": False}}
    resumed = resume_settings(old, {}, suite)
    assert resumed.isolation == "inline" and resumed.limit_train == 100 and resumed.run_id == "r"


@pytest.mark.parametrize("name", ["int8/dynamic", "two words"])
def test_a_pipeline_name_that_would_break_cell_ids_is_refused(name):
    """The bug: a '/' in a pipeline name broke every comparison (cell ids are task/pipeline/backend)."""
    with pytest.raises(UsageError, match=r"pipelines\[0\]\.name: .*no '/' or spaces"):
        validate_suite({"name": "s", "tasks": ["sst2"], "pipelines": [{"name": name}]}, "s.yaml")


def test_all_cores_are_the_cores_this_process_may_use(monkeypatch):
    """The bug: "all cores" was os.cpu_count(), the machine's, not the process's CPU affinity (a container's)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert BackendOptions(name="torch").resolved_threads() == 1
    assert BackendOptions(name="torch", threads=4).resolved_threads() == 4
