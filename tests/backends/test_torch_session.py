"""The PyTorch session's device bookkeeping, checked where no GPU is: what it asks CUDA, in which order."""

from __future__ import annotations

import torch

from compbench.backends.torch import TorchSession


def test_the_memory_peak_is_counted_from_an_emptied_cache(monkeypatch, tiny_artifact):
    """The bug: the reserved-memory peak included what evaluation had left in the caching allocator."""
    calls = []
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, name=name: calls.append(name))
    session = TorchSession(tiny_artifact.torch_model(), torch.device("cpu"), 1, [])
    session.on_cuda = True              # as on a GPU; the calls are recorded, not made
    session.reset_memory_peak()
    assert calls == ["synchronize", "empty_cache", "reset_peak_memory_stats"]
    session.on_cuda = False
    session.close()
