"""``layerdrop``: keep some of a BERT-style encoder's transformer layers and drop the rest.

Layer dropping (Sajjad et al. 2020, "On the Effect of Dropping Layers of Pre-trained
Transformer Models") with no retraining: the kept ``encoder.layer`` modules are taken as they
are, ``config.num_hidden_layers`` is updated, and the result is an ordinary, smaller
``save_pretrained`` model (compbench format ``hf``) that loads with ``from_pretrained`` and
exports to ONNX like any other.

A worked example of a compbench plugin: it is not registered in code, only through the
``compbench.compressors`` entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compbench.common.errors import UnsupportedError, UsageError
from compbench.compressors.base import CompressContext, Compressor
from compbench.models.artifact import ModelArtifact, save_hf_artifact

__all__ = ["LayerDrop", "LayerDropParams"]
__version__ = "0.1.0"


class LayerDropParams(BaseModel):
    """Exactly one of ``keep`` or ``drop_top``."""

    model_config = ConfigDict(extra="forbid")     # a misspelt parameter is an error, not a silent default

    keep: list[int] | None = Field(None, min_length=1, description="encoder layer indices to keep (0 = the bottom "
                                   "layer); they run in their original order")
    drop_top: int | None = Field(None, ge=1, description="drop the top N encoder layers "
                                 "(Sajjad et al.'s best strategy)")

    @field_validator("keep")
    @classmethod
    def _distinct_non_negative(cls, keep: list[int] | None) -> list[int] | None:
        if keep is None:
            return None
        if any(index < 0 for index in keep):
            raise ValueError(f"layer indices count from 0 (the bottom layer); got {keep}")
        if len(set(keep)) != len(keep):
            raise ValueError(f"each layer can be kept once; got {keep}")
        return sorted(keep)     # the original order; also one cache key for [4, 0, 2] and [0, 2, 4]

    @model_validator(mode="after")
    def _exactly_one(self) -> "LayerDropParams":
        if (self.keep is None) == (self.drop_top is None):
            given = "both" if self.keep is not None else "neither"
            raise ValueError("give exactly one of keep (layer indices, e.g. [0, 2, 4]) or drop_top (a count); "
                             f"got {given}")
        return self


class LayerDrop(Compressor):
    name = "layerdrop"
    Params = LayerDropParams
    code_version = "1"                  # part of the cache key: bump when the output changes for the same input
    input_formats = ("hf",)             # plain save_pretrained folders (a chain feeding it others is refused)
    input_precisions = ("fp32",)        # others (int8, fp16) are refused with the reason

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        if model.format != "hf":
            raise UnsupportedError(f"layerdrop works on plain hf models; this one is stored as {model.format!r} "
                                   "(drop layers before steps that change the storage format)")
        module, tokenizer = model.torch_model(), model.tokenizer()
        layers = encoder_layers(module)
        keep = self.kept_layers(len(layers))
        params_before = parameter_count(module)

        kept = torch.nn.ModuleList(layers[index] for index in keep)
        for new_index, layer in enumerate(kept):
            for sub in layer.modules():          # attention modules number themselves for decoder caches
                if isinstance(getattr(sub, "layer_idx", None), int):
                    sub.layer_idx = new_index
        module.base_model.encoder.layer = kept
        config = module.config
        config.num_hidden_layers = len(keep)
        if getattr(config, "pruned_heads", None):   # keyed by layer index: follow the layers, forget dropped ones
            config.pruned_heads = {new: config.pruned_heads[old] for new, old in enumerate(keep)
                                   if old in config.pruned_heads}

        record = {"kept_layers": keep, "dropped_layers": [i for i in range(len(layers)) if i not in keep],
                  "layers_before": len(layers), "layers_after": len(keep),
                  "params_before": params_before, "params_after": parameter_count(module)}
        return save_hf_artifact(ctx.work_dir, module, tokenizer, task=model.task, lineage=[record])

    def kept_layers(self, count: int) -> list[int]:
        """The indices to keep, checked against the input model's ``count`` layers."""
        if self.params.drop_top is not None:
            if self.params.drop_top >= count:
                raise UsageError(f"layerdrop drop_top: {self.params.drop_top} would drop every layer; "
                                 f"the input model has {count} encoder layers (drop at most {count - 1})")
            return list(range(count - self.params.drop_top))
        outside = [index for index in self.params.keep if index >= count]
        if outside:
            raise UsageError(f"layerdrop keep: {outside} out of range; the input model has {count} encoder layers "
                             f"(indices 0-{count - 1})")
        return list(self.params.keep)


def encoder_layers(module) -> torch.nn.ModuleList:
    """``model.base_model.encoder.layer`` of BERT-like models (BERT, RoBERTa, ELECTRA, MiniLM, ...)."""
    layers = getattr(getattr(module.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(module.config, "num_hidden_layers"):
        raise UnsupportedError(f"layerdrop supports BERT-like encoders (base_model.encoder.layer, a ModuleList); "
                               f"this model is {type(module).__name__}")
    return layers


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
