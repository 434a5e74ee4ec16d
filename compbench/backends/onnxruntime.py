"""ONNX Runtime backend: CPU execution provider, and CUDA where onnxruntime has it.

Timing-friendly defaults: explicit intra-op threads, one inter-op thread, sequential
execution, and thread spinning off (spinning threads distort timings when two runtimes
share a process or a machine).

CUDA needs the ``onnxruntime-gpu`` wheel. It installs the same ``onnxruntime`` module as the
CPU wheel and replaces it (uninstall ``onnxruntime`` first; do not keep both): on a GPU machine
``pip install onnxruntime-gpu`` gives the CUDA and CPU execution providers in one build.

A CUDA session is created with the CUDA execution provider alone (a session that came up on
the CPU instead is refused, never timed as CUDA) and reads its inputs through IO binding:
``prepare`` copies the batch to the GPU once and binds the output there, so a timed call is
compute only; ``transfer_ms`` times the host-to-device copy apart.

A causal LM (an export with past key values, or an ONNX artifact quantized from one) loads through optimum's
``ORTModelForCausalLM`` on the same session options and providers: ``language_model()`` returns it (perplexity,
zero-shot scoring and ``generate`` with the cache); ``run`` and the timed pass feed the session directly, one
full forward pass without cache (past tensors of length 0), and ``run`` returns the last position's logits.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compbench.backends.base import Availability, Backend, Clock, Session, StepReads, with_token_types
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_DEVICE_ID = 0
# ONNX input types as numpy dtypes: batches are cast (a no-op when they already match) and made
# contiguous before they are fed or copied to the device. The exports here take int64.
INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16}
PAST_PREFIX = "past_key_values."     # optimum's names of a decoder's cache inputs
PRECISIONS = {np.float32: "fp32", np.float16: "fp16"}   # a cache input's dtype by name


class OrtOptions(BaseModel):
    """``options:`` of an onnxruntime backend entry in a suite."""

    model_config = ConfigDict(extra="forbid")

    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: int = Field(1, ge=1)
    allow_spinning: bool = False


class HostInputs:
    """CPU execution provider: the model reads the numpy arrays where they are."""

    def prepare(self, session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return feeds

    def run_prepared(self, session, feeds: dict[str, np.ndarray]) -> list:
        return session.run(None, feeds)

    def outputs(self, session, feeds: dict[str, np.ndarray]) -> list:
        return self.run_prepared(session, feeds)

    def transfer_ms(self, feeds: dict[str, np.ndarray]) -> float | None:
        return None


class CudaInputs:
    """CUDA execution provider through IO binding: inputs are ``OrtValue``s already on the GPU and
    outputs are left there, so ``run_with_iobinding`` copies nothing.

    The host clock is honest around ``run_with_iobinding``: unless the run option
    ``disable_synchronize_execution_providers`` is "1" (never set here), ONNX Runtime
    synchronises the execution providers with the CPU at the end of every Run; for CUDA that is
    ``cudaStreamSynchronize`` on the compute stream (onnxruntime
    include/onnxruntime/core/session/onnxruntime_run_options_config_keys.h, and
    microsoft/onnxruntime PR #28686: with the default, even CUDA graph replay synchronises).
    Creating a CUDA ``OrtValue`` from numpy is a ``cudaMemcpy`` followed by
    ``cudaStreamSynchronize(0)`` (cudaMemcpy_HostToDevice in
    onnxruntime/core/providers/cuda/cuda_provider_factory.cc), so it is finished when it returns too.
    """

    def __init__(self, device_id: int = CUDA_DEVICE_ID) -> None:
        self.device_id = device_id

    def to_device(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        import onnxruntime

        return {
            name: onnxruntime.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)
            for name, array in feeds.items()
        }

    def prepare(self, session, feeds: dict[str, np.ndarray]):
        binding = session.io_binding()
        for name, value in self.to_device(feeds).items():
            binding.bind_ortvalue_input(name, value)   # the binding keeps the OrtValue alive
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", self.device_id)
        return binding

    def run_prepared(self, session, binding) -> None:
        session.run_with_iobinding(binding)

    def outputs(self, session, binding) -> list:
        self.run_prepared(session, binding)
        return binding.copy_outputs_to_cpu()

    def transfer_ms(self, feeds: dict[str, np.ndarray]) -> float:
        """ms of one host-to-device copy of the batch (new OrtValues; measure.device_costs repeats it)."""
        return Clock().time_ms(lambda: self.to_device(feeds))


Placement = HostInputs | CudaInputs


class OrtSession(Session):
    """An ``InferenceSession`` and where its inputs live (``placement``: host or CUDA).

    ``clock`` stays the host clock on both: a CUDA Run has finished on the GPU when it returns
    (see ``CudaInputs``). ``memory_peak`` stays None: onnxruntime's Python API reports no peak
    device memory.
    """

    def __init__(self, session, deployed_files, placement: Placement | None = None) -> None:
        self.session = session
        self.deployed_files = deployed_files
        self.placement = placement if placement is not None else HostInputs()
        self.input_dtypes = {i.name: INPUT_DTYPES.get(i.type) for i in session.get_inputs()}
        self.input_names = list(self.input_dtypes)

    def feeds(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs from ``batch``, contiguous and in the graph's dtypes (int64 here). A graph that
        takes ``token_type_ids`` from a tokenizer that gives none (RoBERTa's) is fed zeros, as PyTorch
        defaults them; inputs the graph does not take are left out."""
        batch = with_token_types(batch, self.input_dtypes)
        return {name: np.ascontiguousarray(batch[name], dtype=dtype) for name, dtype in self.input_dtypes.items()}

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.placement.outputs(self.session, self.prepare(batch))[0], dtype=np.float32)

    def prepare(self, batch: dict[str, np.ndarray]) -> Any:
        return self.placement.prepare(self.session, self.feeds(batch))

    def run_prepared(self, prepared: Any) -> None:
        self.placement.run_prepared(self.session, prepared)

    def transfer_ms(self, batch: dict[str, np.ndarray]) -> float | None:
        return self.placement.transfer_ms(self.feeds(batch))

    def close(self) -> None:
        self.session = None


class OrtCausalLMSession(OrtSession):
    """A decoder exported with past key values, held by optimum's ``ORTModelForCausalLM`` (``language_model()``).

    The suite's batches carry ``input_ids`` and ``attention_mask`` only: the session's other inputs are what the
    model's own first forward pass feeds (``ORTModelForCausalLM.forward``): positions 0..n-1 and empty caches."""

    def __init__(self, model, deployed_files, placement: Placement | None = None) -> None:
        super().__init__(model.session, deployed_files, placement)
        if self.session.get_outputs()[0].name != "logits":
            raise UnsupportedError(f"{model.path}: the graph's first output is not logits")
        self.model = model
        self.past_names = [name for name in self.input_names if name.startswith(PAST_PREFIX)]

    def feeds(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, length = batch["input_ids"].shape
        extra = {"position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (rows, length))}
        # (batch, kv heads, 0, head size): the shape ORTModelForCausalLM gives a first pass (Llama-style caches)
        empty = (rows, self.model.num_key_value_heads, 0, self.model.embed_size_per_head)
        extra.update({name: np.zeros(empty, dtype=self.input_dtypes[name]) for name in self.past_names})
        return super().feeds({**extra, **batch})

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return super().run(batch)[:, -1]      # next-token logits at the last position, as the torch session

    def language_model(self):
        return self.model

    def step_reads(self) -> StepReads:
        """The graph's initializers at their stored dtypes (ONNX Runtime computes in them; it may repack a
        ``MatMulNBits`` weight at load, to about the same size), and the KV cache at its inputs' dtype."""
        from compbench.models.formats.onnx import graph_step_reads

        weights, rows = graph_step_reads(self.deployed_files[0])
        dtype = np.dtype(self.input_dtypes[self.past_names[0]])
        return StepReads(weights, rows, PRECISIONS.get(dtype.type, dtype.name), float(dtype.itemsize),
                         "ONNX graph initializers as stored")

    def close(self) -> None:
        super().close()
        self.model = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU or CUDA execution provider (CUDA needs the onnxruntime-gpu wheel)"
    Options = OrtOptions

    def availability(self, options: BackendOptions) -> Availability:
        import onnxruntime

        provider = PROVIDERS[options.device]
        available = onnxruntime.get_available_providers()
        if provider not in available:
            hint = "; install onnxruntime-gpu for CUDA" if options.device == "cuda" else ""
            return Availability(
                False, f"onnxruntime {onnxruntime.__version__} has no {provider} (has {', '.join(available)}){hint}"
            )
        if options.precision != "fp32":
            return Availability(
                False, f"precision {options.precision} on onnxruntime comes from a quantize step, not a backend option"
            )
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        import onnxruntime

        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        settings = OrtOptions.model_validate(options.options)
        files = artifact.onnx_files()
        placement = CudaInputs() if options.device == "cuda" else HostInputs()
        deployed = files + [artifact.path / "config.json"]
        if artifact.is_causal_lm:
            model = causal_lm(files[0], session_options(options, settings), options.device)
            check_provider(model.session, options.device)
            return OrtCausalLMSession(model, deployed, placement)
        session = onnxruntime.InferenceSession(str(files[0]), sess_options=session_options(options, settings),
                                               providers=execution_providers(options.device))
        check_provider(session, options.device)
        return OrtSession(session, deployed, placement)


def causal_lm(model_file, sess_options, device: str):
    """optimum's ``ORTModelForCausalLM`` over ``model_file`` (its folder holds config.json and
    generation_config.json), with the cache, on these session options and the device's provider alone."""
    from optimum.onnxruntime import ORTModelForCausalLM

    providers = [(entry, {}) if isinstance(entry, str) else entry for entry in execution_providers(device)]
    return ORTModelForCausalLM.from_pretrained(
        model_file.parent, file_name=model_file.name, local_files_only=True, use_cache=True,
        session_options=sess_options, providers=[name for name, _ in providers],
        provider_options=[settings for _, settings in providers],
    )


def execution_providers(device: str) -> list:
    """The providers asked for: the device's alone. Listing the CPU provider after CUDA would let
    a session whose CUDA provider failed to start run on the CPU and be timed as CUDA."""
    if device == "cuda":
        return [(PROVIDERS["cuda"], {"device_id": CUDA_DEVICE_ID})]
    return [PROVIDERS[device]]


def check_provider(session, device: str) -> None:
    """Refuse a session whose first provider is not the one asked for: onnxruntime falls back to
    the CPU, with only a logged warning, when the CUDA provider cannot start (no driver, missing
    CUDA or cuDNN libraries)."""
    wanted, got = PROVIDERS[device], session.get_providers()
    if not got or got[0] != wanted:
        hint = "; check the CUDA and cuDNN libraries onnxruntime-gpu needs" if device == "cuda" else ""
        raise UnsupportedError(
            f"onnxruntime could not start {wanted}: the session came up on "
            f"{', '.join(got) or 'no provider'}, and its timings would not be {device} timings{hint}"
        )


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
