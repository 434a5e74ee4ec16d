"""How many FLOPs a cell's model does per example at a sequence length, for the roofline columns.

FLOPs are counted with PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode` on the
PyTorch fp32 form of the model. Convention (FlopCounterMode's): one multiply-accumulate is 2
FLOPs, only matrix products are counted (``mm``/``addmm``/``bmm``/``baddbmm``/convolutions/attention
kernels); bias adds, softmax, layer norm, activations and embedding lookups count 0.

An artifact without an fp32 PyTorch form (an ONNX Runtime or int8 model, reduced-precision
weights) does the same arithmetic as the model it was quantized from, so the count walks back
its lineage to the nearest fp32 model PyTorch loads; sparse weights count as dense, since every
backend runs them on dense kernels.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.models.artifact import ModelArtifact


def _sdpa_fused_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a fused SDPA kernel with (query, key, value) leading: PyTorch's own SDPA formula."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _missing_attention_formulas() -> dict:
    """Fused attention ops that FlopCounterMode's registry lacks in this torch version.

    torch <= 2.13 registers the CUDA SDPA kernels but not the CPU one
    (``aten._scaled_dot_product_flash_attention_for_cpu``, where ``scaled_dot_product_attention``
    dispatches on CPU, masked or not), so attention would count 0 FLOPs on CPU
    (pytorch/pytorch#195460, fixed upstream by registering the same formula). Ops already
    registered are left to torch; ops this torch lacks are skipped.
    """
    names = ("_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_fused_attention_overrideable")
    mapping = {}
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None and packet not in flop_registry:
            mapping[packet] = _sdpa_fused_flop
    return mapping


def forward_flops(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> int:
    """FLOPs of one ``model(**inputs)`` forward pass (no grad, eval mode), counted by FlopCounterMode.

    2 FLOPs per multiply-accumulate, matrix products only (see the module docstring); fused CPU
    attention kernels are counted with PyTorch's SDPA formula. The model's training flag is
    restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_missing_attention_formulas())
        with torch.no_grad(), counter:
            model(**inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a stateless module."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _accepted_inputs(model: torch.nn.Module, input_names: Sequence[str]) -> list[str]:
    """The names in ``input_names`` that ``model.forward`` accepts (all of them if it takes ``**kwargs``)."""
    parameters = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return list(input_names)
    return [name for name in input_names if name in parameters]


def bert_dummy_inputs(model: torch.nn.Module, seq_len: int, batch_size: int = 1,
                      input_names: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids"),
                      ) -> dict[str, torch.Tensor]:
    """A ``batch_size x seq_len`` batch of BERT-style inputs on the model's device.

    ``input_ids`` are ones, ``attention_mask`` all ones (no padding), ``token_type_ids`` zeros
    (any other requested name: zeros); only names that ``model.forward`` accepts are included.
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    device = _model_device(model)
    shape = (batch_size, seq_len)
    fill = {"input_ids": 1, "attention_mask": 1}
    return {name: torch.full(shape, fill.get(name, 0), dtype=torch.long, device=device)
            for name in _accepted_inputs(model, input_names)}


def bert_flops_per_example(model: torch.nn.Module, seq_len: int,
                           input_names: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids"),
                           ) -> int:
    """Forward FLOPs of one example of ``seq_len`` tokens (batch of 1, no padding).

    BERT's forward is linear in the batch, so a batch of ``b`` costs ``b`` times this.
    """
    return forward_flops(model, bert_dummy_inputs(model, seq_len, 1, input_names))


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
    model = fp32_torch_model(artifact, store)
    if model is None:
        return {}
    return {seq_len: bert_flops_per_example(model, seq_len) for seq_len in seq_lens}
