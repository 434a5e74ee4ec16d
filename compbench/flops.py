"""How many FLOPs a cell's model does per example at a sequence length, for the roofline columns.

FLOPs are counted on the PyTorch fp32 form of the model (``roofline.bert_flops_per_example``,
PyTorch's own FLOP counter). An artifact without one (an ONNX Runtime or int8 model, reduced
precision weights) does the same arithmetic as the model it was quantized from, so the count
walks back its lineage to the nearest fp32 model PyTorch loads; sparse weights count as dense,
since every backend runs them on dense kernels.
"""

from __future__ import annotations

from compbench.artifact import ArtifactStore, ModelArtifact
from compbench.errors import UnsupportedError


def fp32_torch_model(artifact: ModelArtifact, store: ArtifactStore):
    """The PyTorch module of the artifact when it is fp32 weights PyTorch loads, else of its nearest such ancestor."""
    current: ModelArtifact | None = artifact
    while current is not None:
        if current.precision == "fp32":
            try:
                return current.torch_model("cpu")
            except UnsupportedError:
                pass
        input_hash = (current.lineage[-1] if current.lineage else {}).get("input_hash")
        current = store.get(input_hash) if input_hash else None
    return None


def flops_per_example(artifact: ModelArtifact, store: ArtifactStore, seq_lens: list[int]) -> dict[int, int]:
    """FLOPs of one example's forward pass at each sequence length (empty when no fp32 form is found)."""
    from compbench.roofline import bert_flops_per_example

    model = fp32_torch_model(artifact, store)
    if model is None:
        return {}
    return {seq_len: bert_flops_per_example(model, seq_len) for seq_len in seq_lens}
