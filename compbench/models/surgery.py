"""Finding and swapping submodules of a PyTorch model, shared by the pruning and SVD compressors."""

from __future__ import annotations

import re

import torch

from compbench.models.families import GENERIC_LAYER_LINEARS, layer_linears

# The default ``modules`` of magnitude pruning and SVD: every Linear of every transformer layer, wherever the
# model's family keeps its layers (the value, BERT's naming, is what the parameters record and hash).
ENCODER_LINEARS = GENERIC_LAYER_LINEARS


def linear_modules(model: torch.nn.Module, pattern: str) -> dict[str, torch.nn.Linear]:
    """The ``nn.Linear`` modules whose qualified name matches ``pattern`` (``re.search``), in order."""
    regex = re.compile(pattern)
    found = {name: module for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and regex.search(name)}
    if not found:
        raise ValueError(f"modules: no nn.Linear matches '{pattern}'; the model's Linear layers are named like "
                         f"{next((n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)), '(none)')!r}")
    return found


def selected_linears(model: torch.nn.Module, pattern: str) -> dict[str, torch.nn.Linear]:
    """``linear_modules`` for a compressor's ``modules`` parameter: the default (``ENCODER_LINEARS``) means the
    Linears inside the model family's transformer layers (``families.layer_linears``)."""
    return linear_modules(model, layer_linears(model) if pattern == ENCODER_LINEARS else pattern)


def replace_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def factorised_linear(in_features: int, out_features: int, rank: int, bias: bool) -> torch.nn.Sequential:
    """``x -> B (A x) + b`` with ``A: rank x in`` and ``B: out x rank``: two plain Linears."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, rank, bias=False), torch.nn.Linear(rank, out_features, bias=bias)
    )


def check_pattern(pattern: str) -> str:
    """For params validators: a regular expression that compiles."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return pattern


def _shared_names(model: torch.nn.Module) -> list[list[str]]:
    """State-dict names grouped by the storage they share (tied weights: a causal LM's embeddings and head)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    return list(groups.values())


def untied_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict()`` with each tied tensor once (under its first name), as ``save_pretrained`` stores it: a
    tied LM head is not stored again beside the embeddings."""
    state = model.state_dict()
    for names in _shared_names(model):
        for name in names[1:]:
            state.pop(name, None)
    return state


def load_untied_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` of a state stored without its tied copies (``untied_state``): strict, except that a
    tensor tied to one the state holds may be missing (it is the same tensor)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    covered = {name for names in _shared_names(model) if any(n in state for n in names) for name in names}
    absent = [name for name in missing if name not in covered]
    if absent or unexpected:
        raise RuntimeError(f"weights do not fit the model: missing {absent}, unexpected {list(unexpected)}")
