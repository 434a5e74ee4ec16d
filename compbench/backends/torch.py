"""PyTorch eager backend (CPU; CUDA where torch sees a GPU)."""

from __future__ import annotations

import numpy as np
import torch

from compbench.backends.base import Availability, Backend, Clock, Session
from compbench.common.errors import UnsupportedError
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact
from compbench.models.families import forward_inputs

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Stored precisions that need a particular device.
DEVICE_ONLY = {"int8-dynamic": ("cpu", "PyTorch dynamic INT8 kernels run on CPU only")}


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


class TorchSession(Session):
    def __init__(self, model: torch.nn.Module, device: torch.device, threads: int, deployed_files) -> None:
        self.model = model
        self.inputs = forward_inputs(model)   # a batch's other keys (token_type_ids for DistilBERT) are not fed
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.deployed_files = deployed_files
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)   # process-wide: restored by close()

    def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in batch.items() if k in self.inputs}

    def run_prepared(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(**prepared).logits

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        logits = self.run_prepared(self.prepare(batch))
        if logits.ndim == 3:      # a causal LM: the next-token logits at the last position
            logits = logits[:, -1]
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        return logits.float().cpu().numpy()

    def clock(self) -> Clock:
        return CudaEventClock() if self.on_cuda else Clock()

    def language_model(self) -> torch.nn.Module:
        return self.model

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
        torch.set_num_threads(self._threads_before)
        if self.on_cuda:
            torch.cuda.empty_cache()


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch eager, CPU or CUDA"

    def availability(self, options: BackendOptions) -> Availability:
        if options.device == "cuda" and not torch.cuda.is_available():
            if torch.version.cuda is None:
                return Availability(False, f"this torch build ({torch.__version__}) has no CUDA")
            return Availability(False, "no CUDA device is visible to torch")
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        needed_device, why = DEVICE_ONLY.get(artifact.precision, (options.device, ""))
        if needed_device != options.device:
            raise UnsupportedError(f"{artifact.precision} model on {options.device}: {why}")
        if artifact.precision != "fp32" and options.precision != "fp32":
            raise UnsupportedError(
                f"precision {options.precision} applies to fp32 models; this one is {artifact.precision}"
            )
        device = torch.device(options.device)
        model = artifact.torch_model(device=options.device)
        if artifact.precision == "fp32":
            model = model.to(dtype=DTYPES[options.precision])
        return TorchSession(model.eval(), device, options.resolved_threads(), artifact.deployed_files())
