"""On-disk model formats, one file each; importing this package registers them all in ``FORMATS``."""

# each registers itself
from compbench.models.formats import gguf, hf, low_rank, onnx, openvino, sparse, torch_int8, torchao  # noqa: F401
from compbench.models.formats.base import FORMATS, ArtifactFormat

__all__ = ["FORMATS", "ArtifactFormat"]
