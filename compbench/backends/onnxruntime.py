"""ONNX Runtime backend: CPU execution provider (and CUDA where onnxruntime has it).

Timing-friendly defaults: explicit intra-op threads, one inter-op thread, sequential
execution, and thread spinning off (spinning threads distort timings when two runtimes
share a process or a machine).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compbench.artifact import ModelArtifact
from compbench.backends.base import BACKENDS, Availability, Backend, BackendOptions, Session
from compbench.errors import UnsupportedError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OrtOptions(BaseModel):
    """``options:`` of an onnxruntime backend entry in a suite."""

    model_config = ConfigDict(extra="forbid")

    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: int = Field(1, ge=1)
    allow_spinning: bool = False


class OrtSession(Session):
    def __init__(self, session, deployed_files) -> None:
        self.session = session
        self.deployed_files = deployed_files
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: batch[name] for name in self.input_names}
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None


@BACKENDS.register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU or CUDA execution provider"
    Options = OrtOptions

    def availability(self, options: BackendOptions) -> Availability:
        import onnxruntime

        provider = PROVIDERS[options.device]
        available = onnxruntime.get_available_providers()
        if provider not in available:
            hint = "; install onnxruntime-gpu for CUDA" if options.device == "cuda" else ""
            return Availability(False, f"onnxruntime {onnxruntime.__version__} has no {provider} (has {', '.join(available)}){hint}")
        if options.precision != "fp32":
            return Availability(False, f"precision {options.precision} on onnxruntime comes from a quantize step, not a backend option")
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        import onnxruntime

        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        settings = OrtOptions.model_validate(options.options)
        files = artifact.onnx_files()
        session = onnxruntime.InferenceSession(str(files[0]), sess_options=session_options(options, settings),
                                               providers=[PROVIDERS[options.device]])
        return OrtSession(session, files + [artifact.path / "config.json"])


def session_options(options: BackendOptions, settings: OrtOptions):
    import onnxruntime

    levels = {"disabled": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL}
    modes = {"sequential": onnxruntime.ExecutionMode.ORT_SEQUENTIAL, "parallel": onnxruntime.ExecutionMode.ORT_PARALLEL}
    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = options.resolved_threads()
    session_options.inter_op_num_threads = settings.inter_op_threads
    session_options.execution_mode = modes[settings.execution_mode]
    session_options.graph_optimization_level = levels[settings.graph_optimization]
    spinning = "1" if settings.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    session_options.log_severity_level = 3
    return session_options
