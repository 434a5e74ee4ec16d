"""The one settings object of a run: the suite's choices, overridden by the command line, resolved once.

``RunSettings`` is built in one place (:func:`resolve_settings`: a value given on the command
line wins, else the suite's, else the default), recorded in the run folder's ``run.json``, and
rebuilt from there by every job process and by ``--resume`` (:func:`resume_settings`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from compbench.common.errors import UsageError
from compbench.config.limits import MAX_TIMEOUT_SECONDS
from compbench.config.schema import Suite

RUN_FILE = "run.json"     # how the run was started: what --resume needs
CACHE_DIR_ENV = "COMPBENCH_CACHE_DIR"


@dataclass(frozen=True)
class RunSettings:
    """Everything a run is started with (JSON-able)."""

    suite_file: str            # the run folder's copy of the suite
    base_dir: str              # the folder of the suite as given: its relative paths resolve there
    run_dir: str
    run_id: str
    cache_dir: str             # built models and measured cells
    data_dir: str | None = None          # --data-dir; None: COMPBENCH_DATA_DIR, the suite's data.dir, the hub
    limit_train: int | None = None       # seeded subsets of the rows
    limit_eval: int | None = None
    executor: str = "local"              # local or ray
    address: str | None = None           # Ray: a cluster address; None starts Ray on this machine
    isolation: Literal["subprocess", "inline"] = "subprocess"
    cell_timeout: float | None = None    # seconds for one cell's measurement (subprocess isolation)
    build_timeout: float | None = None   # seconds for one pipeline's build, training included
    build_cpus: int | None = None        # cores a build asks of Ray (default: this machine's)
    fail_fast: bool = False              # stop at the first failed cell
    remeasure: bool = False              # ignore cached cell results (models are still reused)

    def placed_in(self, run_dir: Path) -> "RunSettings":
        """These settings for a run in ``run_dir`` (with its copy of the suite there)."""
        return replace(self, suite_file=str(Path(run_dir) / "suite.yaml"), run_dir=str(run_dir),
                       run_id=Path(run_dir).name)


# What the command line (or the Python API) may set; None means "not given" (and False for ``remeasure``).
OVERRIDES = ("data_dir", "limit_train", "limit_eval", "cache_dir", "executor", "address", "isolation",
             "cell_timeout", "build_timeout", "build_cpus", "fail_fast", "remeasure")
# What a resumed run may change: everything else stays as the run was started.
RESUME_OVERRIDES = ("executor", "address", "isolation", "cell_timeout", "build_timeout", "build_cpus",
                    "fail_fast", "remeasure")
TIMEOUTS = ("cell_timeout", "build_timeout")


def resolve_settings(suite: Suite, overrides: dict[str, Any], *, suite_file: Path, base_dir: Path,
                     run_dir: Path) -> RunSettings:
    """The settings of a new run in ``run_dir``: each value from ``overrides`` where given, else the suite's."""
    given = _given(overrides, OVERRIDES)
    runner, data = suite.runner, suite.data
    return _checked(RunSettings(
        suite_file=str(suite_file), base_dir=str(base_dir), run_dir=str(run_dir), run_id=run_dir.name,
        cache_dir=str(default_cache_dir(suite, given.get("cache_dir"))), data_dir=given.get("data_dir"),
        limit_train=given.get("limit_train", data.limit_train), limit_eval=given.get("limit_eval", data.limit_eval),
        executor=given.get("executor", "local"), address=given.get("address"),
        isolation=given.get("isolation", runner.isolation), cell_timeout=given.get("cell_timeout", runner.cell_timeout),
        build_timeout=given.get("build_timeout", runner.build_timeout), build_cpus=given.get("build_cpus"),
        fail_fast=given.get("fail_fast", False), remeasure=given.get("remeasure", False)))


def resume_settings(record: dict, overrides: dict[str, Any], suite: Suite, run_dir: Path | None = None) -> RunSettings:
    """A recorded run's settings with what ``overrides`` gives of ``RESUME_OVERRIDES``, in ``run_dir`` (where the
    folder is now: its own copy of the suite, its own rows; the recorded folder is where it was). ``fail_fast``
    stays as recorded unless given (``--no-fail-fast`` turns it off); ``remeasure`` stays on once started with it."""
    recorded = dict(record["settings"])
    if "executor" in record:          # run.json before settings were one object: executor apart, limits unresolved
        recorded = {**record["executor"], **recorded}
        recorded["limit_train"] = recorded.get("limit_train") or suite.data.limit_train
        recorded["limit_eval"] = recorded.get("limit_eval") or suite.data.limit_eval
    known = {f.name for f in fields(RunSettings)}
    settings = RunSettings(**{key: value for key, value in recorded.items() if key in known})
    given = _given(overrides, RESUME_OVERRIDES)
    given["remeasure"] = given.get("remeasure", False) or settings.remeasure
    if run_dir is not None:
        run_dir = Path(run_dir)
        given.update(run_dir=str(run_dir), suite_file=str(run_dir / "suite.yaml"))
        if not Path(settings.base_dir).is_dir():    # the suite's own folder is gone: its copy's folder stands in
            given["base_dir"] = str(run_dir)
    return _checked(RunSettings(**{**asdict(settings), **given}))


def _given(overrides: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise UsageError(f"unknown run setting(s) {', '.join(unknown)}; valid: {', '.join(OVERRIDES)}")
    return {key: value for key, value in overrides.items()
            if key in allowed and value is not None and not (key == "remeasure" and value is False)}


def _checked(settings: RunSettings) -> RunSettings:
    for name in TIMEOUTS:
        value = getattr(settings, name)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value <= MAX_TIMEOUT_SECONDS):
            raise UsageError(f"{name.replace('_', '-')} {value!r}: give a number of seconds above 0 and at most "
                             f"{MAX_TIMEOUT_SECONDS:g} (or leave it out for no limit)")
    return settings


def default_cache_dir(suite: Suite | None, option: str | None) -> Path:
    """--cache-dir, else COMPBENCH_CACHE_DIR, else the suite's cache_dir, else ~/.cache/compbench."""
    if option:
        return Path(option).expanduser().resolve()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser().resolve()
    if suite is not None and suite.cache_dir:
        return suite.resolve_path(suite.cache_dir)
    return Path.home() / ".cache" / "compbench"


def read_run_record(run_dir: Path) -> dict:
    """``run.json`` of a run folder; a usage error naming the folder when it is not one."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {RUN_FILE}; --resume takes a run folder that compbench run made, "
                         "such as results/quick-20260101-120000")
    return json.loads(path.read_text())
