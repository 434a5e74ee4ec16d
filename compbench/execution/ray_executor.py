"""The Ray executor: each job a Ray task with resource requests (``pip install compbench[ray]``).

Builds ask for ``Job.cpus`` cores; a measurement asks for as many cores as its backend uses
threads, and one GPU when it runs on CUDA; timing jobs (measurements and matmul peaks) also ask
for the node's one ``compbench_timing`` unit, so no two time on one machine at once (a node
started by hand declares it: ``ray start --resources='{"compbench_timing": 1}'``). Inside the
task the job is still isolated in its own process (with its timeout) unless ``--isolation
inline``. Workers need compbench installed and the run folder, the data and the artifact cache
at the same paths (a shared file system: name it with ``cache_dir``).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from compbench.common.envinfo import usable_cores
from compbench.common.errors import UsageError
from compbench.common.progress import Reporter
from compbench.config.settings import RunSettings
from compbench.execution.executors import Executor
from compbench.execution.isolation import log_file, run_isolated
from compbench.execution.jobs import Job, JobResult, RunContext, run_job

TIMING_RESOURCE = "compbench_timing"    # one unit per node: one timing job at a time per machine


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'compbench[ray]'") from None
    return ray


def _do_job(settings: dict, job: dict) -> dict:
    """Runs on a Ray worker."""
    settings, job = RunSettings(**settings), Job(**job)
    if settings.isolation == "inline":
        return run_job(RunContext(settings, Reporter(enabled=False)), job).to_json()
    log_path = log_file(settings, job)
    if not log_path.parent.parent.is_dir():          # a node without the run folder: keep the log locally
        log_path = Path(tempfile.mkdtemp(prefix="compbench-")) / log_path.name
    forward = _PrintLogs(job)
    return run_isolated(settings, job, log_path, forward).to_json()


class _PrintLogs:
    """A worker's log lines go to the Ray worker's stdout (Ray shows them prefixed); bars are dropped."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, event: dict) -> None:
        if event.get("event") == "log":
            print(f"[{self.job.label}] {event['message']}", flush=True)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, settings: RunSettings, reporter: Reporter) -> None:
        super().__init__(settings, reporter)
        ray = self.ray = _import_ray()
        address = settings.address
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                ray.init(num_cpus=usable_cores(), resources={TIMING_RESOURCE: 1}, include_dashboard=False,
                         log_to_driver=True)
            self._started_ray = True
        else:
            self._started_ray = False
        resources = ray.cluster_resources()
        self.cluster_cpus = int(resources.get("CPU", 1))
        self.cluster_gpus = int(resources.get("GPU", 0))
        self.timing_exclusive = resources.get(TIMING_RESOURCE, 0) > 0
        where = address or "started on this machine"
        reporter.log(f"ray: {self.cluster_cpus} CPUs, {self.cluster_gpus} GPUs ({where})")
        if not self.timing_exclusive:
            reporter.log(f"ray: WARNING: the cluster's nodes declare no {TIMING_RESOURCE!r} resource, so two timings "
                         "may share a machine; start each node with "
                         f"ray start --resources='{{\"{TIMING_RESOURCE}\": 1}}'")
        self._remote = ray.remote(_do_job)
        self._pending: dict = {}

    def run(self, jobs: list[Job], started: Callable[[Job], None]) -> Iterator[JobResult]:
        ray = self.ray
        for job in jobs:
            # a GPU the cluster lacks is not asked for: the worker says why its cell is skipped
            resources = {"num_cpus": min(job.cpus, self.cluster_cpus), "num_gpus": min(job.gpus, self.cluster_gpus)}
            if job.timing and self.timing_exclusive:
                resources["resources"] = {TIMING_RESOURCE: 1}
            ref = self._remote.options(**resources, max_retries=0).remote(asdict(self.settings), asdict(job))
            self._pending[ref] = job
            started(job)
        try:
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1)
                for ref in ready:
                    job = self._pending.pop(ref)
                    try:
                        yield JobResult.from_json(ray.get(ref))
                    except Exception as exc:      # the Ray worker itself died or the task was cancelled
                        first_line = str(exc).splitlines()[0] if str(exc) else ""
                        yield JobResult(job, "failed", f"Ray task failed: {type(exc).__name__}: {first_line}")
        finally:
            for ref in self._pending:
                ray.cancel(ref, force=True)
            self._pending.clear()

    def close(self) -> None:
        if self._started_ray:
            self.ray.shutdown()
