"""PyTorch eager backend (CPU; CUDA where torch sees a GPU)."""

from __future__ import annotations

import numpy as np
import torch

from compbench.artifact import ModelArtifact
from compbench.backends.base import BACKENDS, Availability, Backend, BackendOptions, Session
from compbench.errors import UnsupportedError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Stored precisions that need a particular device.
DEVICE_ONLY = {"int8-dynamic": ("cpu", "PyTorch dynamic INT8 kernels run on CPU only")}


class TorchSession(Session):
    def __init__(self, model: torch.nn.Module, device: torch.device, threads: int, deployed_files) -> None:
        self.model = model
        self.device = device
        self.deployed_files = deployed_files
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
        return Availability(True)

    def load(self, artifact: ModelArtifact, options: BackendOptions) -> Session:
        availability = self.availability(options)
        if not availability.ok:
            raise UnsupportedError(availability.reason)
        needed_device, why = DEVICE_ONLY.get(artifact.precision, (options.device, ""))
        if needed_device != options.device:
            raise UnsupportedError(f"{artifact.precision} model on {options.device}: {why}")
        if artifact.precision != "fp32" and options.precision != "fp32":
            raise UnsupportedError(f"precision {options.precision} applies to fp32 models; this one is {artifact.precision}")
        device = torch.device(options.device)
        model = artifact.torch_model(device=options.device)
        if artifact.precision == "fp32":
            model = model.to(dtype=DTYPES[options.precision])
        return TorchSession(model.eval(), device, options.resolved_threads(), artifact.deployed_files())
