"""``hf-low-rank``: a ``save_pretrained`` folder with some Linear layers factorised in two (SVD).
"""

from __future__ import annotations

import json
from pathlib import Path

from compbench.models.formats.base import TorchModuleFormat, reading_safetensors, register_format
from compbench.models.formats.hf import HuggingFaceFormat
from compbench.models.kinds import model_from_config

LOW_RANK_SPEC = "low_rank.json"


@register_format
class LowRankFormat(TorchModuleFormat, HuggingFaceFormat):
    """A ``save_pretrained`` folder in which some ``nn.Linear`` layers are factorised into two
    (``low_rank.json`` lists them with their ranks); loading rebuilds those pairs, then the weights."""

    name = "hf-low-rank"

    def deployed_files(self, folder: Path) -> list[Path]:
        return [*super().deployed_files(folder), folder / LOW_RANK_SPEC]

    def load_torch(self, folder: Path, device: str = "cpu"):
        from safetensors.torch import load_file

        from compbench.models.surgery import factorised_linear, load_untied_state, replace_module

        model = model_from_config(folder)
        modules = dict(model.named_modules())
        for name, rank in json.loads((folder / LOW_RANK_SPEC).read_text())["ranks"].items():
            dense = modules[name]
            replace_module(
                model, name, factorised_linear(dense.in_features, dense.out_features, rank, dense.bias is not None)
            )
        state = {}
        for weights in sorted(folder.glob("*.safetensors")):
            with reading_safetensors(weights):
                state.update(load_file(str(weights)))
        load_untied_state(model, state)     # a tied LM head is stored once, with the embeddings
        return model.eval().to(device)
