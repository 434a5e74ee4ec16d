"""``hf-sparse``: unstructured-sparse weights stored as a bitmask of the non-zero positions plus the
non-zero values (the codec lives here too); loaded dense.
"""

from __future__ import annotations

import json
from pathlib import Path

from compbench.models.formats.base import TorchModuleFormat, reading_safetensors, register_format
from compbench.models.kinds import model_from_config

SPARSE_WEIGHTS = "model.sparse.safetensors"
SPARSE_SPEC = "sparse.json"


@register_format
class SparseBitmaskFormat(TorchModuleFormat):
    """Unstructured-sparse weights stored compressed: for each pruned tensor a bitmask of its
    non-zero positions (1 bit per element) and its non-zero values; other tensors dense.
    Loading rebuilds dense tensors: PyTorch and ONNX Runtime run them on dense kernels."""

    name = "hf-sparse"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [folder / SPARSE_WEIGHTS, folder / SPARSE_SPEC, folder / "config.json"]

    def parameter_counts(self, folder: Path) -> tuple[int, int]:
        state = load_sparse_state(folder)
        return sum(t.numel() for t in state.values()), sum(int(t.count_nonzero()) for t in state.values())

    def load_torch(self, folder: Path, device: str = "cpu"):
        from compbench.models.surgery import load_untied_state

        model = model_from_config(folder)
        load_untied_state(model, load_sparse_state(folder))     # a tied LM head is stored once
        return model.eval().to(device)


def save_sparse_state(folder: Path, state: dict, sparse_names: list[str]) -> None:
    """Write ``state`` with the tensors named in ``sparse_names`` as bitmask + values."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors, shapes = {}, {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if name in sparse_names:
            mask = tensor != 0
            tensors[f"{name}::mask"] = torch.from_numpy(np.packbits(mask.flatten().numpy()))
            tensors[f"{name}::values"] = tensor[mask].clone()
            shapes[name] = list(tensor.shape)
        else:
            tensors[name] = tensor.clone()
    save_file(tensors, str(folder / SPARSE_WEIGHTS))
    (folder / SPARSE_SPEC).write_text(json.dumps({"encoding": "bitmask+values", "shapes": shapes}, indent=1))


def load_sparse_state(folder: Path) -> dict:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    with reading_safetensors(folder / SPARSE_WEIGHTS):
        stored = load_file(str(folder / SPARSE_WEIGHTS))
    shapes = json.loads((folder / SPARSE_SPEC).read_text())["shapes"]
    state = {name: tensor for name, tensor in stored.items() if "::" not in name}
    for name, shape in shapes.items():
        values = stored[f"{name}::values"]
        count = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(stored[f"{name}::mask"].numpy(), count=count).astype(bool))
        dense = torch.zeros(count, dtype=values.dtype)
        dense[mask] = values
        state[name] = dense.reshape(shape)
    return state
