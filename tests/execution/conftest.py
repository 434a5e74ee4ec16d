"""Fixtures of the runner's tests: an installed plugin with faulty backends."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

FAULTS = '''
import os
import time

from pydantic import BaseModel, ConfigDict

from compbench.backends.base import Availability, Backend
from compbench.common.plugins import BACKENDS


class SleepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 60


class _Fault(Backend):
    def availability(self, options):
        return Availability(True)

    def torch_session(self, artifact, options):
        return BACKENDS.get("torch")().load(artifact, options.model_copy(update={"name": "torch", "options": {}}))


class RaisingBackend(_Fault):
    name = "raising"

    def load(self, artifact, options):
        raise RuntimeError("deliberate failure in load")


class SleepingBackend(_Fault):
    """Sleeps, then runs as torch does: a cell that outlives a short timeout, or simply takes a while."""
    name = "sleeping"
    Options = SleepOptions

    def load(self, artifact, options):
        time.sleep(options.options.get("seconds", 60))
        return self.torch_session(artifact, options)


class DyingBackend(_Fault):
    name = "dying"

    def load(self, artifact, options):
        os.kill(os.getpid(), 9)
'''


@pytest.fixture(scope="module")
def fault_plugin(tmp_path_factory) -> Path:
    """A folder that, on PYTHONPATH, is an installed plugin with three faulty backends."""
    root = tmp_path_factory.mktemp("fault-plugin")
    (root / "compbench_faults.py").write_text(FAULTS)
    info = root / "compbench_faults-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: compbench-faults\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [compbench.backends]
        raising = compbench_faults:RaisingBackend
        sleeping = compbench_faults:SleepingBackend
        dying = compbench_faults:DyingBackend
        """))
    return root
