"""Runs under faults and hostile input (issue 15): a damaged or planted cache, two processes on one run,
a cache that cannot be written, a moved run folder, a killed runner, odd values. Each test reproduces
what went wrong before through the real command line (``python -m compbench``) on real SST-2 rows
with a tiny random BERT as the base model.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compbench.common.locks import run_folder_lock
from compbench.results.rows import read_rows

from runs import Runner, row_keys, suite_dict


@pytest.fixture
def runner(tmp_path, fault_plugin) -> Runner:
    return Runner(tmp_path, fault_plugin, tmp_path / "cache")


def inline_suite(runner: Runner, tiny_artifact, glue_data, name: str = "s", **extra) -> Path:
    suite = suite_dict(tiny_artifact.path, glue_data, [{"name": "torch"}], runner={"isolation": "inline"}, **extra)
    return runner.write_suite(name, suite)


def run(runner: Runner, suite: Path, run_id: str, *more) -> subprocess.CompletedProcess:
    return runner.run("run", suite, "--results-dir", runner.results, "--run-id", run_id, "--no-progress", *more)


def artifact_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "artifacts").iterdir() if not p.name.startswith("."))


def result_entries(cache: Path) -> dict[str, Path]:
    """Cached cell results by the pipeline that stored them."""
    found = {}
    for path in (cache / "results").glob("*.json"):
        found[json.loads(path.read_text())["rows"][0]["pipeline"]] = path
    return found


def teacher_dir(cache: Path) -> Path:
    for path in artifact_dirs(cache):
        if [step["step"] for step in json.loads((path / "compbench.json").read_text())["lineage"]] == ["finetune"]:
            return path
    raise AssertionError("no teacher in the cache")


@pytest.mark.long
def test_damaged_teacher_weights_are_caught_before_a_number_is_written(runner, tiny_artifact, glue_data):
    """The bug: 8 MB of random bytes over the teacher's weights gave accuracy 0.47 instead of 0.87, status ok,
    and the 0.47 stayed cached after the file was restored."""
    suite = inline_suite(runner, tiny_artifact, glue_data)
    first = run(runner, suite, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    weights = teacher_dir(runner.tmp_path / "cache") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3: len(data) // 3 + 65536] = os.urandom(65536)
    weights.write_bytes(bytes(data))

    second = run(runner, suite, "second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{weights}: its bytes differ from the seal" in second.stderr and "built again" in second.stderr
    assert "fine-tuning" in second.stderr                       # the teacher was trained again, not used damaged
    rows = runner.rows("second")
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == len(runner.rows("first"))
    # the same seeded training gives the same bytes: the same content hash, metric and predictions
    assert {r["artifact_content_hash"] for r in rows if r["pipeline"] == "baseline"} == \
        {r["artifact_content_hash"] for r in runner.rows("first") if r["pipeline"] == "baseline"}
    assert [r["metric"] for r in rows] == [r["metric"] for r in runner.rows("first")]
    assert "damaged" in runner.run("cache", "ls").stdout


CORRUPTIONS = ["[]", '{"a": 1}', "another cell's rows", "not json", "an empty list of rows", "other bytes"]


@pytest.mark.long
def test_a_cached_cell_result_that_is_not_this_cells_rows_is_measured_again(runner, tiny_artifact, glue_data):
    """The bug: a cached [] made a cell vanish (4 rows instead of 6, exit 0), another cell's rows were served
    as this cell's, and {"a": 1} crashed every later run. Each corruption of the pruned cell's entry, in turn."""
    suite = inline_suite(runner, tiny_artifact, glue_data)
    first = run(runner, suite, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    for n, entry in enumerate(CORRUPTIONS):
        entries = result_entries(runner.tmp_path / "cache")
        target = entries["pruned"]
        stored = json.loads(target.read_text())
        if entry == "another cell's rows":
            target.write_text(json.dumps({**json.loads(entries["baseline"].read_text()), "key": target.stem}))
        elif entry == "an empty list of rows":
            target.write_text(json.dumps({"key": target.stem, "rows": []}))
        elif entry == "other bytes":    # rows of the same cell, but of a model with other bytes
            stored["rows"][0]["artifact_content_hash"] = "0" * 16
            target.write_text(json.dumps(stored))
        else:
            target.write_text(entry)

        again = run(runner, suite, f"again{n}")
        assert again.returncode == 0, (entry, again.stderr[-3000:])
        assert f"cached cell result {target}" in again.stderr and "ignored, measured again" in again.stderr, entry
        rows = runner.rows(f"again{n}")
        assert row_keys(rows) == row_keys(runner.rows("first")) and len(rows) == 4, entry
        measured = {r["pipeline"]: r["measured_in_run"] for r in rows}
        assert measured == {"baseline": "first", "pruned": f"again{n}"}, entry
        baseline = {r["nonzero_params"] for r in rows if r["pipeline"] == "baseline"}
        assert {r["nonzero_params"] for r in rows if r["pipeline"] == "pruned"} != baseline, entry


def test_a_second_process_in_a_run_folder_is_refused_in_one_line(runner, tiny_artifact, glue_data):
    """The bug: two --resume of one folder at once each appended the missing rows (12 rows, and the baseline
    "1.17x faster" than itself)."""
    suite = inline_suite(runner, tiny_artifact, glue_data)
    assert run(runner, suite, "locked").returncode == 0
    run_dir = runner.results / "locked"
    before = (run_dir / "results.jsonl").read_bytes()
    with run_folder_lock(run_dir):         # as a first resume holds it
        second = runner.run("run", "--resume", run_dir, "--no-progress")
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"compbench: error: {run_dir.resolve()} is in use by another compbench process (pid {os.getpid()})" \
        in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and (run_dir / "results.jsonl").read_bytes() == before
    again = runner.run("run", "--resume", run_dir, "--no-progress")     # released: it goes on
    assert again.returncode == 0 and "2 of 2 cells already done" in again.stderr, again.stderr[-3000:]


def test_a_cache_that_cannot_be_written_loses_no_row(runner, tiny_artifact, glue_data):
    """The bug: a cell's rows went to the cache before results.jsonl, and a failed cache write (ENOSPC,
    read-only) crashed the run. Here the cache's results folder is a file: every write to it fails."""
    suite = inline_suite(runner, tiny_artifact, glue_data)
    cache = runner.tmp_path / "cache"
    cache.mkdir()
    (cache / "results").write_text("not a folder")
    done = run(runner, suite, "full")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = runner.rows("full")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert done.stderr.count("cell result not cached: cannot write") == 2 and "the rows are in the run" in done.stderr


@pytest.mark.long
def test_a_copied_or_moved_run_folder_resumes_where_it_is(runner, tiny_artifact, glue_data):
    """The bug: --resume worked in the folder recorded in run.json: resuming a copy rewrote the original's
    reports and left the copy broken; a moved folder could not be resumed."""
    suite = suite_dict(tiny_artifact.path, glue_data, [{"name": "torch"}, {"name": "raising"}],
                       pipelines=[{"name": "baseline"}], runner={"isolation": "inline"})
    done = run(runner, runner.write_suite("copied", suite), "original")
    assert done.returncode == 1                                          # the raising cell failed
    original = runner.results / "original"
    report_before = (original / "report.md").read_bytes(), (original / "report.md").stat().st_mtime_ns
    copy = runner.tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    (runner.tmp_path / "copied.yaml").unlink()            # the suite as given is gone: the folder's copy serves
    resumed = runner.run("run", "--resume", copy, "--no-progress")
    assert resumed.returncode == 1 and "1 of 2 cells already done" in resumed.stderr, resumed.stderr[-3000:]
    assert str(copy) in resumed.stderr and str(original) not in resumed.stderr
    assert ((original / "report.md").read_bytes(), (original / "report.md").stat().st_mtime_ns) == report_before
    assert len(read_rows(copy / "results.jsonl")) == 4 and (copy / "report.md").stat().st_mtime_ns > 0

    moved = runner.tmp_path / "moved"
    original.rename(moved)
    again = runner.run("run", "--resume", moved, "--no-progress")
    assert again.returncode == 1 and "1 of 2 cells already done" in again.stderr, again.stderr[-3000:]
    assert not original.exists() and len(read_rows(moved / "results.jsonl")) == 4


@pytest.mark.long
def test_no_fail_fast_on_resume_lifts_a_recorded_fail_fast(runner, tiny_artifact, glue_data):
    """The bug: --fail-fast was inherited by every resume with no way to turn it off."""
    suite = runner.write_suite("ff", suite_dict(tiny_artifact.path, glue_data, [{"name": "raising"}, {"name": "torch"}],
                                                pipelines=[{"name": "baseline"}], runner={"isolation": "inline"}))
    stopped = run(runner, suite, "ff", "--fail-fast")
    assert stopped.returncode == 1 and {r["backend"] for r in runner.rows("ff")} == {"raising"}
    resumed = runner.run("run", "--resume", runner.results / "ff", "--no-progress", "--no-fail-fast")
    assert resumed.returncode == 1 and "--fail-fast" not in resumed.stderr, resumed.stderr[-3000:]
    assert {(r["backend"], r["status"]) for r in runner.rows("ff")} == {("raising", "failed"), ("torch", "ok")}
    record = json.loads((runner.results / "ff" / "run.json").read_text())
    assert record["settings"]["fail_fast"] is True          # what the run was started with stays on record


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job processes through /proc")
def test_jobs_die_with_a_killed_runner(runner, tiny_artifact, glue_data):
    """The bug: jobs outlived a kill -9 of the runner for 6-10 s (their death signal was tied to the fork
    server), so an immediate resume timed its cells against an orphan."""
    suite = runner.write_suite("orphan", suite_dict(tiny_artifact.path, glue_data,
                                                    [{"name": "sleeping", "options": {"seconds": 120}}],
                                                    pipelines=[{"name": "baseline"}]))
    process = runner.start("run", suite, "--results-dir", runner.results, "--run-id", "orphan", "--no-progress")
    logs = runner.results / "orphan" / "logs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(logs.glob("measure-*sleeping*.log")):
        assert process.poll() is None, process.stdout.read()[-3000:]
        time.sleep(0.1)
    time.sleep(1)
    jobs = _descendants(process.pid)
    assert jobs, "the measure job's process was not found"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 3
    while time.time() < deadline and any(_alive(pid) for pid in jobs):
        time.sleep(0.05)
    survivors = [pid for pid in jobs if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of {len(jobs)} processes outlived the runner by 3 s"


@pytest.mark.parametrize("args, says", [
    (("--run-id", "../outside"), "--run-id '../outside' cannot name a run folder"),
    (("--run-id", "a/b"), "--run-id 'a/b' cannot name a run folder"),
    (("--run-id", ".."), "--run-id '..' cannot name a run folder"),
    (("--cell-timeout", "nan"), "'nan': give a number of seconds above 0"),
    (("--build-timeout", "inf"), "'inf': give a number of seconds above 0"),
])
def test_odd_values_on_the_command_line_are_one_line_errors(runner, tiny_artifact, glue_data, args, says):
    suite = inline_suite(runner, tiny_artifact, glue_data)
    done = runner.run("run", suite, "--results-dir", runner.results, "--no-progress", *args)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (runner.tmp_path / "outside").exists() and not list(runner.tmp_path.glob("results/*"))


def test_a_suite_name_that_is_a_path_and_a_results_dir_that_cannot_hold_runs(runner, tiny_artifact, glue_data):
    bad_name = inline_suite(runner, tiny_artifact, glue_data, name="named")
    text = bad_name.read_text().replace("name: runner", "name: ../../escape")
    bad_name.write_text(text)
    done = runner.run("run", bad_name, "--results-dir", runner.results, "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "name: '../../escape' cannot name a run folder" in done.stderr
    assert not list(runner.tmp_path.parent.glob("escape*"))

    suite = inline_suite(runner, tiny_artifact, glue_data)
    a_file = runner.tmp_path / "a-file"
    a_file.write_text("x")
    done = runner.run("run", suite, "--results-dir", a_file / "results", "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("compbench: error:")]
    assert len(lines) == 1 and f"cannot make a run folder in {a_file / 'results'}" in lines[0]


def _make_run_dirs(results: str, count: int, queue) -> None:
    from compbench.config.schema import Suite
    from compbench.execution.runner import new_run_dir

    suite = Suite(name="race", tasks=["sst2"])
    made = [str(new_run_dir(Path(results), suite, "same")) for _ in range(count)]
    queue.put(made)


def test_runs_started_together_never_share_a_folder(tmp_path):
    """The bug: run folders were made after an exists() check: two runs started together collided 83 times
    in 300 in a harness."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_make_run_dirs, args=(str(tmp_path), 25, queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    made = [path for _ in workers for path in queue.get(timeout=60)]
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert len(made) == 150 and len(set(made)) == 150


@pytest.mark.long
def test_a_measurement_on_a_busy_machine_is_flagged_and_not_cached(runner, tiny_artifact, glue_data):
    """The bug: timings taken while other processes ran were cached and later served as if clean (a baseline
    at 60 ms instead of 27 ms). Here a process burns a core throughout the run."""
    suite = inline_suite(runner, tiny_artifact, glue_data)
    runner.env["COMPBENCH_BUSY_CORES"] = "0.5"          # the default (the other tests run on any machine)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = run(runner, suite, "busy")
    finally:
        burner.kill()
        burner.wait()
    assert busy.returncode == 0, busy.stderr[-3000:]
    loads = [r["machine_load"] for r in runner.rows("busy")]
    assert all(load["quiet"] is False and load["other_cores"] > 0.5 for load in loads), loads
    assert "the machine was busy" in busy.stderr
    assert not list((runner.tmp_path / "cache" / "results").glob("*.json"))
