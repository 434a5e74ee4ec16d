"""PyTorch backend (CPU; CUDA where torch sees a GPU): eager, or compiled by ``torch.compile`` (inductor).

**Precision.** ``precision: bf16|fp16`` runs an fp32 model in that precision, as the entry's ``options:`` say
(``TorchOptions``): ``precision_mode: weights`` (default) casts the weights; ``autocast`` keeps fp32 weights and
runs the forward pass under ``torch.autocast`` (products in the precision, reductions and norms in fp32). On a CPU
either is allowed only where the CPU computes the precision natively (``common.cpu_features``: AMX or AVX512-BF16
for bf16, AMX-FP16 or AVX512-FP16 for fp16; an fp16 model stored by ``quantize: fp16`` too): elsewhere PyTorch
emulates it, far slower than fp32, and the cells are skipped with the reason. On CUDA both modes run as asked
and nothing more is checked. ``runtime_info`` says what ran: the weights' dtype read back, and the mode.

**torch.compile.** ``compile: true`` (with ``compile_mode``: default, reduce-overhead, max-autotune,
max-autotune-no-cudagraphs) compiles the model with inductor. Compilation is a build cost, reported apart (the row's
``runtime``: ``compile_seconds``, ``compiled_shapes``, ...), never inside a latency:

- ``load`` compiles at once, on a sample batch: a model inductor cannot compile (or a machine without the C++
  compiler inductor needs on CPU) is an ``UnsupportedError`` there, so its cells are ``skipped`` with the reason.
- Shapes are **dynamic** (``dynamic=True``): one graph serves every batch size and length, so the evaluation's many
  batch shapes do not each compile (a static graph per shape would soon reach dynamo's recompile limit, past which
  it silently runs eager). Dynamo still specialises a dimension of size 1 (and 0): a batch of one row compiles once
  more. Marking dimensions dynamic one by one (``mark_dynamic``) would give the same graphs here: a classifier's
  inputs have only the two dimensions, both of which vary.
- ``prepare`` (which the timing calls before any timed call, the cold one included) runs one call on each input
  shape it has not seen, so whatever that shape compiles is compiled there; the seconds of every call that
  compiled (dynamo's graph count moved) are added to ``compile_seconds``. The cold latency of a compiled session is
  therefore its first call after compiling (and running once), at each shape.
- A timed call (``run_prepared``) that compiles anyway is refused with an error (a ``failed`` row), never timed.
- A graph already compiled in this process for the same architecture and shape (dynamo shares it between models
  of one class) is reused: its compile costs this session nothing and is not counted.

Compiling is refused for causal LMs: perplexity and ``generate`` go through ``language_model()`` and would run
partly eager, so the timed and the scored model would differ.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from compbench.backends.base import Availability, Backend, Clock, Session, StepReads
from compbench.common.cpu_features import native_precision_problem
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact
from compbench.models.families import forward_inputs

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = {dtype: name for name, dtype in DTYPES.items()}
# Stored precisions that need a particular device.
DEVICE_ONLY = {"int8-dynamic": ("cpu", "PyTorch dynamic INT8 kernels run on CPU only")}
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
# The batch ``load`` compiles on: neither dimension 1 (dynamo would specialise it) and the two unequal (equal sizes
# would share one symbol and the graph would guard on batch == length).
SAMPLE_SHAPE = (2, 8)
# Dynamo's recompile limit per code object (default 8) counts the graphs of every model of one class in the
# process; past it dynamo would silently run eager. It is raised, and reaching it is made an error.
RECOMPILE_LIMIT = 64
# reduce-overhead on CUDA records a CUDA graph on a shape's second call and replays from the third: the calls
# ``prepare`` makes on a new shape before any is timed.
CUDAGRAPH_WARM_CALLS = 3


class TorchOptions(BaseModel):
    """``options:`` of a torch backend entry in a suite."""

    model_config = ConfigDict(extra="forbid")

    precision_mode: Literal["weights", "autocast"] = "weights"   # how a bf16/fp16 entry runs an fp32 model
    compile: bool = False                                        # torch.compile (inductor)
    compile_mode: CompileMode = "default"

    @model_validator(mode="after")
    def _mode_needs_compile(self) -> "TorchOptions":
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode {self.compile_mode!r} applies with compile: true")
        return self


class CudaEventClock(Clock):
    """Device time of one call: CUDA events recorded around it on the current stream, read after
    the end event has synchronised (never a host timer around asynchronous work). Launch gaps
    between kernels count, as a user waiting for the result would see them."""

    def time_ms(self, call) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (it moves only when a call compiles)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def compile_failure(exc: BaseException) -> UnsupportedError:
    lines = str(exc).strip().splitlines()
    return UnsupportedError(f"torch.compile failed: {type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": "))


class CompiledModel:
    """The model compiled by inductor, and what its compiles cost: the seconds of each call that compiled."""

    def __init__(self, model: torch.nn.Module, mode: str, device: torch.device) -> None:
        import torch._dynamo.exc

        self.errors = (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit)
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.fail_on_recompile_limit_hit = True     # never run eager silently once the limit is reached
        config.suppress_errors = False                # nor when a compile fails
        self.mode = mode
        self.module = torch.compile(model, mode=mode, dynamic=True)
        self.warm_calls = CUDAGRAPH_WARM_CALLS if device.type == "cuda" and mode == "reduce-overhead" else 1
        self.seconds = 0.0
        self.shapes = 0          # calls that compiled (about one per shape that needs its own graph)
        self.graphs = 0          # graphs dynamo compiled for them (more than shapes where the model breaks graphs)
        self.seen: set[tuple] = set()

    @staticmethod
    def signature(prepared: dict[str, torch.Tensor]) -> tuple:
        return tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in prepared.items())

    def booked(self, forward, prepared: dict[str, torch.Tensor]):
        """``forward(prepared)``; where it compiled, its seconds are added to the compile cost."""
        before = compiled_graphs()
        start = time.perf_counter()
        try:
            out = forward(prepared)
        except self.errors as exc:       # dynamo's and inductor's errors (a failed C++ build among them)
            raise compile_failure(exc) from exc
        seconds = time.perf_counter() - start
        self.seen.add(self.signature(prepared))
        graphs = compiled_graphs() - before
        if graphs:
            self.seconds += seconds
            self.shapes += 1
            self.graphs += graphs
        return out

    def record(self) -> dict:
        return {"compile_mode": self.mode, "compile_dynamic": True, "compile_seconds": round(self.seconds, 3),
                "compiled_shapes": self.shapes, "compiled_graphs": self.graphs}


class TorchSession(Session):
    def __init__(self, model: torch.nn.Module, device: torch.device, threads: int, deployed_files,
                 autocast: torch.dtype | None = None, compile_mode: str | None = None,
                 runtime: dict | None = None) -> None:
        self.model = model
        self.inputs = forward_inputs(model)   # a batch's other keys (token_type_ids for DistilBERT) are not fed
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.deployed_files = deployed_files
        self.autocast = autocast
        self.runtime = dict(runtime or {})
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)   # process-wide: restored by close(); inductor's kernels use it too
        self.compiled = CompiledModel(model, compile_mode, device) if compile_mode else None

    def _forward(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        """One inference: the compiled model where there is one, under autocast where asked."""
        model = self.compiled.module if self.compiled else self.model
        amp = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with torch.inference_mode(), amp:
            return model(**prepared).logits

    def _place(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in batch.items() if k in self.inputs}

    def compile_now(self) -> None:
        """Compile on a sample batch (``load`` calls it): a model that cannot compile is refused before timing."""
        rows, length = SAMPLE_SHAPE
        sample = {name: (torch.zeros if name == "token_type_ids" else torch.ones)((rows, length), dtype=torch.long)
                  for name in self.inputs}
        try:
            self.compiled.booked(self._forward, {k: v.to(self.device) for k, v in sample.items()})
        except UnsupportedError:
            raise
        except Exception as exc:
            raise compile_failure(exc) from exc

    def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The batch on the device; a compiled session first runs it where its shape is new, so that the shape's
        compile (if it needs one) is paid and booked here, before any timed call."""
        prepared = self._place(batch)
        if self.compiled and self.compiled.signature(prepared) not in self.compiled.seen:
            for _ in range(self.compiled.warm_calls):
                self.compiled.booked(self._forward, prepared)
            if self.on_cuda:
                torch.cuda.synchronize(self.device)
        return prepared

    def run_prepared(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.compiled is None:
            return self._forward(prepared)
        before = compiled_graphs()
        logits = self._forward(prepared)
        if compiled_graphs() != before:
            raise RuntimeError("torch.compile compiled during a timed call (a guard failed on a shape prepare had "
                               "compiled): the call is not timed")
        return logits

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        prepared = self._place(batch)
        logits = self.compiled.booked(self._forward, prepared) if self.compiled else self._forward(prepared)
        if logits.ndim == 3:      # a causal LM: the next-token logits at the last position
            logits = logits[:, -1]
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        return logits.float().cpu().numpy()

    def clock(self) -> Clock:
        return CudaEventClock() if self.on_cuda else Clock()

    def language_model(self) -> Any:
        return AutocastModel(self.model, self.device.type, self.autocast) if self.autocast is not None else self.model

    def step_reads(self) -> StepReads:
        """The loaded module's tensors at their dtypes (a sparse model loaded dense counts dense; under autocast a
        Linear's weights count at the autocast dtype), and the KV cache's dtype read from a one-token forward."""
        weights, rows = module_step_reads(self.model, self.autocast)
        kv_dtype, kv_bytes = kv_cache_dtype(self.language_model(), self.device)
        return StepReads(weights, rows, kv_dtype, kv_bytes, "torch module tensors as loaded")

    def runtime_info(self) -> dict:
        """The precision and mode that ran (a bf16/fp16 entry; the weights' dtype read back from the model) and,
        compiled, the compile's mode and cost. Empty for a plain fp32 eager session."""
        return {**self.runtime, **(self.compiled.record() if self.compiled else {})}

    def transfer_ms(self, batch: dict[str, np.ndarray]) -> float | None:
        """The batch's copy from (pageable) host memory to the GPU, timed with CUDA events."""
        if not self.on_cuda:
            return None
        host = [torch.from_numpy(v) for v in batch.values()]
        return self.clock().time_ms(lambda: [tensor.to(self.device) for tensor in host])

    def reset_memory_peak(self) -> None:
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()     # blocks evaluation left cached are not this shape's memory
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory_peak(self) -> dict | None:
        """Peak memory PyTorch's caching allocator saw on the GPU (weights included): allocated and reserved."""
        if not self.on_cuda:
            return None
        return {"allocated_bytes": torch.cuda.max_memory_allocated(self.device),
                "reserved_bytes": torch.cuda.max_memory_reserved(self.device)}

    def close(self) -> None:
        self.model = None
        self.compiled = None
        torch.set_num_threads(self._threads_before)
        if self.on_cuda:
            torch.cuda.empty_cache()


class AutocastModel:
    """A causal LM's ``language_model()`` under autocast: its forward and ``generate`` run in the entry's precision,
    as the timed calls do; everything else (``config``, ``device``, ...) is the model's."""

    def __init__(self, model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def resident_bytes(tensor: torch.Tensor) -> int:
    """Bytes ``tensor`` holds in memory: a tensor subclass (torchao's quantized weights) its inner tensors', with
    bitsandbytes' scales (``SCB``, a 4-bit weight's ``quant_state``) beside the integers."""
    if hasattr(tensor, "__tensor_flatten__"):          # plain tensors and Parameters have none
        names, _ = tensor.__tensor_flatten__()
        return sum(resident_bytes(getattr(tensor, name)) for name in names)
    state = getattr(tensor, "quant_state", None)
    side = [getattr(tensor, "SCB", None), *(state.as_dict().values() if state is not None else ())]
    return tensor.numel() * tensor.element_size() + sum(t.numel() * t.element_size() for t in side
                                                         if isinstance(t, torch.Tensor))


def own_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors a module holds itself: parameters, buffers, and a dynamic-INT8 Linear's packed weight and bias
    (fbgemm keeps them outside the parameters)."""
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    tensors = [*module._parameters.values(), *module._buffers.values()]
    if isinstance(module, LinearPackedParams):
        tensors += module._weight_bias()
    return [tensor for tensor in tensors if tensor is not None]


def module_step_reads(model: torch.nn.Module, autocast: torch.dtype | None = None) -> tuple[int, int]:
    """(bytes a decoding step reads whole, bytes of one row of each lookup table) of ``model`` as loaded: a tensor
    that only ``nn.Embedding`` modules hold is a lookup table (one row per sequence a step); one that another module
    also holds (a tied LM head) is read whole, once however many modules share it. Under ``autocast`` a Linear's
    fp32 parameters count at the autocast dtype: autocast caches its cast of a leaf that requires grad for the
    whole ``generate`` call, so later steps read the copy."""
    found: dict[int, list] = {}         # id -> [bytes, only looked up, tensor]
    for module in model.modules():
        lookup = isinstance(module, torch.nn.Embedding)
        cast = autocast is not None and isinstance(module, torch.nn.Linear)
        for tensor in own_tensors(module):
            size = resident_bytes(tensor)
            if cast and tensor.dtype == torch.float32 and tensor.requires_grad:
                size = tensor.numel() * autocast.itemsize
            entry = found.setdefault(id(tensor), [size, lookup, tensor])
            entry[0], entry[1] = min(entry[0], size), entry[1] and lookup
    whole = sum(size for size, lookup, _ in found.values() if not lookup)
    rows = sum(size // tensor.shape[0] for size, lookup, tensor in found.values() if lookup)
    return whole, rows


def kv_cache_dtype(model, device: torch.device) -> tuple[str, float]:
    """The KV cache as ``model`` (a causal LM) keeps it, from one forward pass of one token: its dtype names
    (``fp32``; ``bf16+fp32`` where keys and values differ, as under autocast) and mean bytes per value."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with torch.inference_mode():
        cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
    tensors = [tensor for layer in cache for tensor in layer]
    names = sorted({PRECISIONS.get(tensor.dtype, str(tensor.dtype).removeprefix("torch.")) for tensor in tensors})
    values = sum(tensor.numel() for tensor in tensors)
    return "+".join(names), sum(tensor.numel() * tensor.element_size() for tensor in tensors) / values


def cpp_compiler_problem() -> str | None:
    """Why inductor could not build CPU kernels here (None: a C++ compiler it looks for is on PATH)."""
    import torch._inductor.config as inductor_config

    wanted = inductor_config.cpp.cxx
    names = [name for name in (wanted if isinstance(wanted, (list, tuple)) else (wanted,)) if name]
    if any(shutil.which(name) for name in names):
        return None
    default = "clang++" if sys.platform == "darwin" else "g++"
    return (f"torch.compile (inductor) needs a C++ compiler on CPU: none of {', '.join(names) or default} is on "
            f"PATH (install {default}, or set CXX{' (now ' + os.environ['CXX'] + ')' if 'CXX' in os.environ else ''})")


def torch_options(options: BackendOptions) -> TorchOptions:
    return TorchOptions.model_validate(options.options)


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch eager or torch.compile (inductor), CPU or CUDA"
    Options = TorchOptions

    def availability(self, options: BackendOptions) -> Availability:
        if options.device == "cuda" and not torch.cuda.is_available():
            if torch.version.cuda is None:
                return Availability(False, f"this torch build ({torch.__version__}) has no CUDA")
            return Availability(False, "no CUDA device is visible to torch")
        try:
            settings = torch_options(options)
        except ValidationError as exc:
            return Availability(False, f"torch options: {exc.errors()[0]['msg']}")
        if options.device == "cpu":
            problem = native_precision_problem(options.precision)
            if problem:
                return Availability(False, problem)
            if settings.compile:
                problem = cpp_compiler_problem()
                if problem:
                    return Availability(False, problem)
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        settings = torch_options(options)
        needed_device, why = DEVICE_ONLY.get(artifact.precision, (options.device, ""))
        if needed_device != options.device:
            raise UnsupportedError(f"{artifact.precision} model on {options.device}: {why}")
        if artifact.precision != "fp32" and options.precision != "fp32":
            raise UnsupportedError(
                f"precision {options.precision} applies to fp32 models; this one is {artifact.precision}"
            )
        if options.device == "cpu":
            problem = native_precision_problem(artifact.precision)     # an fp16 model stored by quantize: fp16
            if problem:
                raise UnsupportedError(f"{artifact.precision} model on cpu: {problem}")
        if settings.compile and artifact.is_causal_lm:
            raise UnsupportedError("torch.compile is not measured for causal LMs: perplexity and generate run "
                                   "through the model's own methods and would run partly eager")
        device = torch.device(options.device)
        model = artifact.torch_model(device=options.device)
        autocast, runtime = None, {}
        if artifact.precision == "fp32" and options.precision != "fp32":
            if settings.precision_mode == "autocast":
                autocast = DTYPES[options.precision]
                runtime = {"precision": options.precision, "precision_mode": "autocast"}
            else:
                model = model.to(dtype=DTYPES[options.precision])
                runtime = {"precision": weights_precision(model), "precision_mode": "weights"}
        session = TorchSession(model.eval(), device, options.resolved_threads(), artifact.deployed_files(),
                               autocast=autocast, compile_mode=settings.compile_mode if settings.compile else None,
                               runtime=runtime)
        if session.compiled:
            try:
                session.compile_now()
            except BaseException:
                session.close()
                raise
        return session


def weights_precision(model: torch.nn.Module) -> str:
    """The precision of the model's floating-point weights, read back (``fp32``, ``bf16``, ``fp16``)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return PRECISIONS.get(dtype, str(dtype).removeprefix("torch."))
