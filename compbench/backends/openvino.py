"""OpenVINO backend: the CPU plugin (and an Intel GPU where OpenVINO sees one).

The model is read as OpenVINO IR (``models.openvino_export.openvino_ir``): an encoder converted from the ONNX
export ONNX Runtime runs, a causal LM exported by optimum-intel as the stateful decoder OpenVINO deploys, an NNCF
build as it was written. It is compiled with:

- ``INFERENCE_PRECISION_HINT`` from the entry's ``precision`` (fp32 -> f32, bf16, fp16 -> f16): OpenVINO's CPU
  plugin silently runs an "fp32" model in bf16 on a CPU with AMX unless told, so fp32 is asked for explicitly.
  ``options: {engine_precision: true}`` leaves the choice to OpenVINO (what a user gets with no settings). bf16
  and fp16 are allowed only where the device computes them natively (its ``OPTIMIZATION_CAPABILITIES``: BF16 on
  AMX or AVX512-BF16 CPUs, FP16 on AMX-FP16 ones): emulated, they would be slow and mislead.
- ``PERFORMANCE_HINT`` (latency, default, or throughput), ``INFERENCE_NUM_THREADS`` = the entry's threads, and
  pinning off (the other runtimes are not pinned either).

What ran is read back from the compiled model (``runtime_info``): the inference precision, streams, threads and
hint, never the ones asked for. Static shapes (``options: {shapes: static}``) compile the model once per input
shape on first use, outside timed calls; that compile time is reported apart, as the first dynamic compile is.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from compbench.backends.base import Availability, Backend, Session, StepReads, with_token_types
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact

# the entry's precision -> OpenVINO's element type name, and back (what the compiled model reports)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
READ_BACK = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}     # OPTIMIZATION_CAPABILITIES a native precision needs
DEVICES = {"cpu": "CPU", "gpu": "GPU"}
# read back from a compiled model into the row's ``runtime``
READ_BACK_PROPERTIES = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                        "EXECUTION_DEVICES")
CACHE_PROPERTIES = ("KV_CACHE_PRECISION",)       # a decoder's: the CPU plugin stores its KV cache as u8 by default
# bytes a value of a precision (as read back) takes; a u8 cache's per-token scales are not counted
VALUE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "u8": 1, "i8": 1, "u4": 0.5, "i4": 0.5}


class OpenVinoOptions(BaseModel):
    """``options:`` of an openvino backend entry in a suite."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["cpu", "gpu"] = "cpu"         # OpenVINO's device: CPU, or an Intel GPU (entry device: cpu)
    performance_hint: Literal["latency", "throughput"] = "latency"
    shapes: Literal["dynamic", "static"] = "dynamic"
    engine_precision: bool = False                # leave the inference precision to OpenVINO; the row says which
    # a causal LM's KV cache: u8 (the CPU plugin's default, scales per token) quantizes it; default: the inference
    # precision (fp32 means fp32), or OpenVINO's choice with engine_precision
    kv_cache_precision: Literal["u8", "f16", "bf16", "f32"] | None = None


def precision_name(element_type: Any) -> str:
    """OpenVINO's element type (``Type`` or its name) as compbench's precision name."""
    name = getattr(element_type, "get_type_name", lambda: str(element_type))()
    return READ_BACK.get(name, name)


def core():
    import openvino

    return openvino.Core()


class CompiledShapes:
    """The model compiled once (dynamic shapes) or once per input shape (static), each compile timed."""

    def __init__(self, model, device: str, config: dict, static: bool) -> None:
        self.model, self.device, self.config, self.static = model, device, config, static
        self.compiled: dict[tuple, Any] = {}
        self.requests: dict[tuple, Any] = {}
        self.compile_seconds = 0.0
        if not static:
            self._compile(None)

    def request(self, feeds: dict[str, np.ndarray]):
        key = tuple(sorted((name, array.shape) for name, array in feeds.items())) if self.static else None
        if key not in self.requests:
            self._compile(key)
        return self.requests[key]

    def any_compiled(self):
        """A compiled model to read properties from; None before the first static shape is compiled."""
        return next(iter(self.compiled.values()), None)

    def _compile(self, key) -> None:
        model = self.model
        if key is not None:
            model = self.model.clone()
            model.reshape({name: list(shape) for name, shape in key})
        start = time.perf_counter()
        compiled = core().compile_model(model, self.device, self.config)
        self.compile_seconds += time.perf_counter() - start
        self.compiled[key], self.requests[key] = compiled, compiled.create_infer_request()


class OpenVinoSession(Session):
    """An encoder's IR compiled on the device; ``run`` returns the first output (logits)."""

    def __init__(self, shapes: CompiledShapes, deployed_files, artifact_precision: str) -> None:
        self.shapes = shapes
        self.deployed_files = deployed_files
        self.artifact_precision = artifact_precision
        self.input_names = [port.get_any_name() for port in shapes.model.inputs]

    def feeds(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's inputs from ``batch`` (int64, contiguous); ``token_type_ids`` zeros where the tokenizer gave
        none (as PyTorch defaults them)."""
        batch = with_token_types(batch, self.input_names)
        return {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self.input_names}

    def prepare(self, batch: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        feeds = self.feeds(batch)
        return self.shapes.request(feeds), feeds

    def run_prepared(self, prepared) -> None:
        request, feeds = prepared
        request.infer(feeds, share_inputs=True)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        request, feeds = self.prepare(batch)
        request.infer(feeds, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def runtime_info(self) -> dict:
        return runtime_record(self.shapes.any_compiled(), self.artifact_precision, self.shapes)

    def close(self) -> None:
        self.shapes = None


class OpenVinoCausalLMSession(Session):
    """A stateful decoder held by optimum-intel's ``OVModelForCausalLM`` (``language_model()``: perplexity,
    zero-shot scoring and ``generate``). The timed pass is one full forward pass of the prompt from an empty cache:
    the request's state reset, then the inputs ``OVModelForCausalLM`` itself feeds a first pass."""

    def __init__(self, model, deployed_files, artifact_precision: str, compile_seconds: float) -> None:
        self.model = model
        self.deployed_files = deployed_files
        self.artifact_precision = artifact_precision
        self.compile_seconds = compile_seconds

    def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        return self.model.prepare_inputs(input_ids=torch.from_numpy(batch["input_ids"]),
                                         attention_mask=torch.from_numpy(batch["attention_mask"]))

    def run_prepared(self, prepared: dict[str, Any]) -> None:
        self.model.request.reset_state()
        self.model.request.infer(prepared, share_inputs=True)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.run_prepared(self.prepare(batch))
        logits = self.model.request.get_tensor("logits").data
        return np.array(logits[:, -1], dtype=np.float32)   # next-token logits at the last position

    def language_model(self):
        return self.model

    def runtime_info(self) -> dict:
        return runtime_record(self.model.request.get_compiled_model(), self.artifact_precision, None,
                              self.compile_seconds, READ_BACK_PROPERTIES + CACHE_PROPERTIES)

    def step_reads(self) -> StepReads:
        """The IR's constants, float weights at the inference precision read back from the compiled model, and the
        KV cache at its precision read back too (``KV_CACHE_PRECISION``)."""
        from compbench.models.formats.openvino import ir_step_reads, read_ir

        info = self.runtime_info()
        weights, rows = ir_step_reads(read_ir(self.deployed_files[0]), VALUE_BYTES.get(info["float_precision"]))
        kv = info.get("kv_cache_precision", info["float_precision"])
        return StepReads(weights, rows, kv, float(VALUE_BYTES[kv]),
                         f"OpenVINO IR constants, float weights at {info['float_precision']}")

    def close(self) -> None:
        self.model = None


def runtime_record(compiled, artifact_precision: str, shapes: CompiledShapes | None,
                   compile_seconds: float | None = None, names: tuple[str, ...] = READ_BACK_PROPERTIES) -> dict:
    """What the compiled model says it runs: its inference precision (the row's ``runtime_precision``: a quantized
    model's stored precision, with the precision of its float parts beside it), hint, streams, threads."""
    properties = {}
    for name in names if compiled is not None else ():
        try:
            value = compiled.get_property(name)
        except RuntimeError:      # a property this device does not have (KV_CACHE_PRECISION on an encoder)
            continue
        properties[name.lower()] = precision_name(value) if "PRECISION" in name else _plain(value)
    float_precision = properties.get("inference_precision_hint", "fp32")
    record = {"precision": float_precision if artifact_precision in ("fp32", "fp16") else artifact_precision,
              "float_precision": float_precision, **properties}
    if shapes is not None:
        record.update(compile_seconds=round(shapes.compile_seconds, 3), compiled_shapes=len(shapes.compiled),
                      static_shapes=shapes.static)
    elif compile_seconds is not None:
        record["compile_seconds"] = round(compile_seconds, 3)
    return record


def _plain(value: Any):
    if isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(getattr(value, "name", value))


class OpenVinoBackend(Backend):
    name = "openvino"
    description = "OpenVINO, CPU (and an Intel GPU: options.target gpu); precision read back from the compiled model"
    Options = OpenVinoOptions

    def availability(self, options: BackendOptions) -> Availability:
        try:
            import openvino
        except ImportError:
            return Availability(False, "openvino is not installed (pip install 'compbench[openvino]', or "
                                "scripts/setup.sh)")
        settings = OpenVinoOptions.model_validate(options.options)
        if options.device != "cpu":
            return Availability(False, f"OpenVINO runs on its own devices, not {options.device}: keep device cpu "
                                "and set options.target (cpu, or gpu for an Intel GPU)")
        device = DEVICES[settings.target]
        ov = core()
        if device not in ov.available_devices:
            return Availability(False, f"OpenVINO {openvino.__version__} sees no {device} device (has "
                                f"{', '.join(ov.available_devices) or 'none'})")
        needed = CAPABILITY.get(options.precision)
        if needed and not settings.engine_precision:
            capabilities = ov.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if needed not in capabilities:
                name = ov.get_property(device, "FULL_DEVICE_NAME")
                return Availability(False, f"{name} does not compute {options.precision} natively (OpenVINO "
                                    f"{device} capabilities: {', '.join(capabilities)}): emulated it would be "
                                    "slow and mislead")
        if settings.engine_precision and options.precision != "fp32":
            return Availability(False, "engine_precision leaves the precision to OpenVINO; do not also set precision")
        if settings.kv_cache_precision in CAPABILITY and not settings.engine_precision:
            capabilities = ov.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if CAPABILITY[settings.kv_cache_precision] not in capabilities:
                return Availability(False, f"a {settings.kv_cache_precision} KV cache is not native on this "
                                    f"{device} (capabilities: {', '.join(capabilities)})")
        return Availability(True)

    def compute_precision(self, options: BackendOptions, artifact_precision: str) -> str:
        """A quantized model's stored precision; else the entry's, or with ``engine_precision`` the one OpenVINO
        picks by default on this device (bf16 on AMX CPUs)."""
        if artifact_precision not in ("fp32", "fp16"):
            return artifact_precision
        settings = OpenVinoOptions.model_validate(options.options)
        if not settings.engine_precision:
            return options.precision
        return precision_name(core().get_property(DEVICES[settings.target], "INFERENCE_PRECISION_HINT"))

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        from compbench.models.formats.openvino import OPENVINO_XML, OpenVinoFormat
        from compbench.models.openvino_export import openvino_ir

        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        settings = OpenVinoOptions.model_validate(options.options)
        config = compile_config(options, settings)
        device = DEVICES[settings.target]
        folder = openvino_ir(artifact)
        deployed = OpenVinoFormat().deployed_files(folder)     # the IR as deployed, converted or built
        if artifact.is_causal_lm:
            return self._causal_lm(folder, device, config, settings, deployed, artifact.precision)
        try:
            model = core().read_model(str(folder / OPENVINO_XML))
            shapes = CompiledShapes(model, device, config, static=settings.shapes == "static")
        except RuntimeError as exc:     # an op OpenVINO cannot convert or compile: what cannot run here
            raise UnsupportedError(f"OpenVINO cannot run this model: {str(exc).strip().splitlines()[0]}") from None
        return OpenVinoSession(shapes, deployed, artifact.precision)

    @staticmethod
    def _causal_lm(folder, device: str, config: dict, settings: OpenVinoOptions, deployed,
                   artifact_precision: str) -> Session:
        from optimum.intel import OVModelForCausalLM

        if settings.shapes == "static":
            raise UnsupportedError("a causal LM on OpenVINO runs with dynamic shapes (its cache grows every token)")
        if settings.kv_cache_precision is not None:
            config = {**config, "KV_CACHE_PRECISION": settings.kv_cache_precision}
        elif not settings.engine_precision:    # fp32 means fp32: the KV cache too, not the CPU plugin's u8 default
            config = {**config, "KV_CACHE_PRECISION": config["INFERENCE_PRECISION_HINT"]}
        model = OVModelForCausalLM.from_pretrained(str(folder), export=False, device=device, ov_config=config,
                                                   compile=False, local_files_only=True)
        start = time.perf_counter()
        model.compile()
        return OpenVinoCausalLMSession(model, deployed, artifact_precision, time.perf_counter() - start)


def compile_config(options: BackendOptions, settings: OpenVinoOptions) -> dict:
    """The compile properties of an entry: threads, hint, no pinning, and the precision unless left to OpenVINO."""
    config = {"PERFORMANCE_HINT": settings.performance_hint.upper(),
              "INFERENCE_NUM_THREADS": str(options.resolved_threads()), "ENABLE_CPU_PINNING": "NO"}
    if settings.target == "gpu":
        del config["INFERENCE_NUM_THREADS"], config["ENABLE_CPU_PINNING"]
    if not settings.engine_precision:
        config["INFERENCE_PRECISION_HINT"] = HINTS[options.precision]
    return config
