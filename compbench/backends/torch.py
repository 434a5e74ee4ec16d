"""PyTorch eager backend (CPU; CUDA where torch sees a GPU)."""

from __future__ import annotations

import numpy as np
import torch

from compbench.artifact import ModelArtifact
from compbench.backends.base import BACKENDS, Availability, Backend, BackendOptions, Session
from compbench.errors import UnsupportedError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchSession(Session):
    def __init__(self, model: torch.nn.Module, device: torch.device, threads: int) -> None:
        self.model = model
        self.device = device
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)   # process-wide: restored by close()

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return logits.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        torch.set_num_threads(self._threads_before)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@BACKENDS.register
class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch eager, CPU or CUDA"

    def availability(self, options: BackendOptions) -> Availability:
        if options.device == "cuda" and not torch.cuda.is_available():
            if torch.version.cuda is None:
                return Availability(False, f"this torch build ({torch.__version__}) has no CUDA")
            return Availability(False, "no CUDA device is visible to torch")
        if options.device == "cpu" and options.precision == "fp16":
            return Availability(False, "fp16 matmuls are not supported by PyTorch on CPU; use bf16 or fp32")
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        device = torch.device(options.device)
        model = artifact.torch_model().to(device=device, dtype=DTYPES[options.precision]).eval()
        return TorchSession(model, device, options.resolved_threads())
