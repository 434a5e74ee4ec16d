"""``prune``: unstructured magnitude or Wanda pruning, 2:4 semi-structured pruning, and structured pruning of
attention heads or FFN neurons that rebuilds the layers physically smaller.

- ``magnitude``: zero the smallest-|w| fraction ``amount`` of the selected Linear weights
  (``scope: global`` ranks them all together, ``per_layer`` each layer alone), with
  ``torch.nn.utils.prune`` (its masks hold during recovery). Stored as bitmask + non-zero
  values (format ``hf-sparse``): smaller on disk, but every backend runs it on dense kernels,
  so it is no faster.
- ``wanda`` (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"): score
  ``|W_ij| * ||X_j||_2``, X_j the j-th input feature of the Linear over every token of ``calibration_rows``
  training rows (a language-modeling task: its text cut into ``max_seq_len``-token rows; a classifier: its
  encoded rows), and zero the lowest-scoring fraction ``amount`` of each output row. The activations are
  those of the unpruned model in one pass (the paper feeds each layer the output of the layers already
  pruned: a little more accurate, a forward pass per layer). Stored ``hf-sparse``: no faster.
- ``two-four``: 2:4 semi-structured sparsity, in every group of 4 consecutive input weights of an output row
  the 2 with the highest ``score`` (``wanda``, as above, or ``magnitude``) kept: exactly 50%. Sparse tensor
  cores (NVIDIA Ampere and later) can run this pattern faster; here it is stored ``hf-sparse`` and every
  backend, on CPU in particular, runs it on dense kernels: smaller on disk, no faster.

The default ``modules`` are every Linear inside the transformer layers: for a causal LM the decoder layers'
q/k/v/o and gate/up/down projections, never the token embeddings or the LM head (``models.families``).
- ``heads``: remove the fraction ``amount`` of all attention heads with the lowest importance
  (at least one head stays in each layer), through ``transformers``' ``prune_heads``; families whose
  pruned model would not load again (or not run) are refused with the reason (``models.families``).
- ``ffn``: remove the fraction ``amount`` of each layer's FFN neurons with the lowest importance
  (the same count in every layer, so the result is a standard config with a smaller
  ``intermediate_size``; the kept count is rounded to a multiple of 8).

Where each family keeps its layers, projections and sizes comes from ``models.families``; ALBERT's
shared layers are pruned once for all their applications. Importance (``heads``, ``ffn``):
``gradient``, the summed |dL/d mask| of a mask on each head's or neuron's output over
``importance_rows`` training rows (Michel et al. 2019; head scores are normalised per layer as
there), or ``weight``, the norms of the weights that feed and read the head or neuron.
``recovery`` fine-tunes afterwards (optionally distilling from the unpruned model).
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compbench.common.errors import UnsupportedError
from compbench.compressors.base import CompressContext, Compressor, Stored, check_method_params
from compbench.compressors.recovery import RecoveryParams, score_and_recover
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.families import family_of
from compbench.models.formats.sparse import save_sparse_state
from compbench.models.surgery import ENCODER_LINEARS, check_pattern, selected_linears, untied_state
from compbench.tasks.encoding import encode_rows, encode_training_rows, iter_batches

METHOD_PARAMS: dict[str, set[str]] = {
    "magnitude": {"amount", "scope", "modules", "recovery"},
    "wanda": {"amount", "modules", "calibration_rows", "recovery"},
    "two-four": {"score", "modules", "calibration_rows", "recovery"},
    "heads": {"amount", "importance", "importance_rows", "recovery"},
    "ffn": {"amount", "importance", "importance_rows", "recovery"},
}


class PruneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["wanda", "two-four", "magnitude", "heads", "ffn"] = Field(
        description="magnitude or wanda (unstructured), two-four (2:4 semi-structured), heads or ffn (structured)"
    )
    amount: float = Field(
        0.5, gt=0, lt=1, description="fraction removed: of the weights (wanda: of each output row's), of all "
        "heads, or of each layer's FFN neurons (two-four: always 0.5)"
    )
    scope: Literal["global", "per_layer"] = Field(
        "global", description="magnitude: rank weights across layers or within each"
    )
    modules: str = Field(
        ENCODER_LINEARS,
        description="magnitude: regex over Linear module names (default: every Linear of the transformer layers)",
    )
    score: Literal["wanda", "magnitude"] = Field("wanda", description="two-four: what ranks the weights of a group")
    calibration_rows: int = Field(128, ge=1, description="wanda, two-four: training rows whose activations score")
    importance: Literal["gradient", "weight"] = "gradient"
    importance_rows: int = Field(512, ge=1, description="training rows for gradient importance")
    recovery: RecoveryParams | None = None

    _pattern = field_validator("modules")(check_pattern)

    @model_validator(mode="after")
    def _only_params_the_method_reads(self) -> "PruneParams":
        if self.method != "two-four" and "amount" not in self.model_fields_set:
            raise ValueError(f"method {self.method!r} needs amount (the fraction to remove)")
        check_method_params(self, METHOD_PARAMS[self.method])
        return self


class Prune(Compressor):
    name = "prune"
    Params = PruneParams
    code_version = "2"      # 2: wanda and two-four; the lineage records the sparsity pattern
    input_formats = ("hf", "hf-sparse")     # dense Linear layers (sparse-stored ones load dense)

    @classmethod
    def produces(cls, params: PruneParams) -> Stored:
        return Stored("hf-sparse" if params.method in UNSTRUCTURED else "hf", "fp32")

    def compress(self, model: ModelArtifact, ctx: CompressContext) -> ModelArtifact:
        if model.is_causal_lm and self.params.method not in UNSTRUCTURED:
            raise UnsupportedError(f"prune method {self.params.method!r} is not built for causal LMs (its importance "
                                   "scores use a classifier's labels; transformers has no prune_heads for "
                                   "Llama-style decoders); use magnitude, wanda or two-four")
        module, tokenizer = model.torch_model(), model.tokenizer()
        return METHODS[self.params.method](module, tokenizer, model, self.params, ctx)


# ---------------------------------------------------------------- unstructured


def prune_magnitude(
    module, tokenizer, source: ModelArtifact, params: PruneParams, ctx: CompressContext
) -> ModelArtifact:
    from torch.nn.utils import prune

    targets = selected_linears(module, params.modules)
    if params.scope == "global":
        prune.global_unstructured(
            [(m, "weight") for m in targets.values()], pruning_method=prune.L1Unstructured, amount=params.amount
        )
    else:
        for linear in targets.values():
            prune.l1_unstructured(linear, "weight", amount=params.amount)
    pattern = {"pattern": "unstructured", "score": "magnitude", "scope": params.scope}
    return save_unstructured(module, tokenizer, source, params, ctx, targets, pattern)


def input_norms(module, tokenizer, linears: dict[str, torch.nn.Linear], ctx: CompressContext,
                rows: int) -> tuple[dict[str, torch.Tensor], int]:
    """Per Linear, ``||X_j||_2`` of each input feature j over every token of ``rows`` seeded training rows
    (``encode_training_rows``: a language model's text chunks, a classifier's encoded rows), and the tokens
    seen. One row per forward pass, so no padding token is counted."""
    encoded = encode_training_rows(tokenizer, ctx.data.task, ctx.data.train, ctx.max_seq_len)
    picked = np.sort(np.random.default_rng(ctx.seed).permutation(len(encoded))[:rows])
    sums = {name: torch.zeros(linear.in_features, dtype=torch.float64) for name, linear in linears.items()}

    def accumulate(name):
        def hook(_module, inputs):
            sums[name] += inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double().pow(2).sum(dim=0)
        return hook

    hooks = [linear.register_forward_pre_hook(accumulate(name)) for name, linear in linears.items()]
    tokens = 0
    module.eval()
    try:
        with torch.inference_mode():
            for index in picked:
                feature = encoded.features[index]
                module(**{key: torch.tensor([values]) for key, values in feature.items()})
                tokens += len(feature["input_ids"])
    finally:
        for hook in hooks:
            hook.remove()
    return {name: total.sqrt().float() for name, total in sums.items()}, tokens


def wanda_scores(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2``: (out, in) scores from the weight and the input features' norms (in,)."""
    return weight.detach().abs() * norm.unsqueeze(0)


def row_mask(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """Keep-mask zeroing the ``floor(amount * in)`` lowest scores of every output row (Wanda's comparison group)."""
    removed = int(amount * scores.shape[1])
    mask = torch.ones_like(scores, dtype=torch.bool)
    if removed:
        mask.scatter_(1, torch.argsort(scores, dim=1, stable=True)[:, :removed], False)
    return mask


def two_four_mask(scores: torch.Tensor) -> torch.Tensor:
    """Keep-mask with the 2 highest scores of every 4 consecutive inputs of a row (the 2:4 pattern)."""
    out, width = scores.shape
    groups = scores.reshape(out, width // 4, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, 2, dim=2).indices, True)
    return mask.reshape(out, width)


def prune_by_score(module, tokenizer, source: ModelArtifact, params: PruneParams,
                   ctx: CompressContext) -> ModelArtifact:
    """``wanda`` and ``two-four``: a keep-mask per Linear from its scores, held by ``torch.nn.utils.prune``
    (so it holds during recovery as magnitude pruning's does)."""
    from torch.nn.utils import prune

    targets = selected_linears(module, params.modules)
    two_four = params.method == "two-four"
    if two_four:
        uneven = [name for name, linear in targets.items() if linear.in_features % 4]
        if uneven:
            raise UnsupportedError(f"two-four: {', '.join(uneven[:3])} have inputs not a multiple of 4; leave them "
                                   "out of modules")
    score = "magnitude" if two_four and params.score == "magnitude" else "wanda"
    pattern = {"pattern": "2:4" if two_four else "unstructured", "score": score,
               "comparison_group": "4 consecutive inputs of an output row" if two_four else "output row"}
    if score == "wanda":
        norms, tokens = input_norms(module, tokenizer, targets, ctx, params.calibration_rows)
        pattern["calibration"] = {"rows": min(params.calibration_rows, len(ctx.data.train)), "tokens": tokens,
                                  "max_seq_len": ctx.max_seq_len, "seed": ctx.seed}
    for name, linear in targets.items():
        scores = wanda_scores(linear.weight, norms[name]) if score == "wanda" else linear.weight.detach().abs()
        mask = two_four_mask(scores) if two_four else row_mask(scores, params.amount)
        prune.custom_from_mask(linear, "weight", mask)
    return save_unstructured(module, tokenizer, source, params, ctx, targets, pattern)


def save_unstructured(module, tokenizer, source: ModelArtifact, params: PruneParams, ctx: CompressContext,
                      targets: dict[str, torch.nn.Linear], pattern: dict) -> ModelArtifact:
    """Recover (the masks hold while training), make the masks permanent, record the sparsity and the pattern,
    and store bitmask + non-zero values (``hf-sparse``)."""
    from torch.nn.utils import prune

    record = score_and_recover(module, tokenizer, source, params.recovery, ctx, f"prune {params.method}")
    for linear in targets.values():
        prune.remove(linear, "weight")
    sparsity = {
        name: round(1 - int(linear.weight.count_nonzero()) / linear.weight.numel(), 4)
        for name, linear in targets.items()
    }
    weights = sum(linear.weight.numel() for linear in targets.values())
    zeros = sum(linear.weight.numel() - int(linear.weight.count_nonzero()) for linear in targets.values())
    record.update(
        {
            "pruned_modules": len(targets),
            "sparsity": round(zeros / weights, 4),
            "sparsity_pattern": pattern,
            "sparsity_per_module": sparsity,
            "storage": "bitmask + non-zero values (dense kernels at run time: no speed-up)",
        }
    )
    module.config.save_pretrained(ctx.work_dir)
    tokenizer.save_pretrained(ctx.work_dir)
    save_sparse_state(ctx.work_dir, untied_state(module), [f"{name}.weight" for name in targets])
    return ModelArtifact(path=ctx.work_dir, task=source.task, num_labels=source.num_labels, format="hf-sparse", hash="",
                         lineage=[record], kind=source.kind)


# ---------------------------------------------------------------- structured


def importance_batches(tokenizer, ctx: CompressContext, params: PruneParams):
    """Seeded training rows for gradient importance, as (inputs, labels) tensors."""
    rows = ctx.data.train.sample(n=min(params.importance_rows, len(ctx.data.train)), random_state=ctx.seed)
    encoded = encode_rows(tokenizer, ctx.data.task, rows, ctx.max_seq_len)
    for batch, targets in iter_batches(tokenizer, encoded, batch_size=32):
        yield {k: torch.from_numpy(v) for k, v in batch.items()}, torch.from_numpy(targets["labels"])


def gradient_importance(
    module, tokenizer, ctx, params, masks: list[torch.Tensor], forward: Callable
) -> list[torch.Tensor]:
    """Sum over importance rows of |dL/d mask| for each mask (all ones: the model is unchanged)."""
    module.eval()  # no dropout: the scores describe the model as deployed
    totals = [torch.zeros_like(mask) for mask in masks]
    for inputs, labels in importance_batches(tokenizer, ctx, params):
        loss = forward(inputs, labels).loss
        for total, grad in zip(totals, torch.autograd.grad(loss, masks)):
            total += grad.abs()
    return totals


def masked_inputs(linears: list[torch.nn.Linear], masks: list[torch.Tensor], width: int = 1) -> list:
    """Hooks multiplying each Linear's input features by its mask, each mask entry repeated over ``width``
    consecutive features (a head's slice of the context). Every call of a shared Linear is masked."""
    def hook(mask):
        return lambda _module, inputs: (inputs[0] * mask.repeat_interleave(width), *inputs[1:])
    return [linear.register_forward_pre_hook(hook(mask)) for linear, mask in zip(linears, masks)]


def gradient_importance_through(module, tokenizer, ctx, params, linears, sizes: list[int], width: int = 1):
    """Gradient importance of masks (of ``sizes``) on the inputs of ``linears``."""
    masks = [torch.ones(size, requires_grad=True) for size in sizes]
    hooks = masked_inputs(linears, masks, width)
    try:
        return gradient_importance(module, tokenizer, ctx, params, masks,
                                   lambda inputs, labels: module(**inputs, labels=labels))
    finally:
        for hook in hooks:
            hook.remove()


def head_importance(module, tokenizer, ctx, params: PruneParams) -> torch.Tensor:
    """(physical layers, heads) scores; higher = more important.

    Gradient importance masks each head's slice of the context the attention output projection reads: the
    same as transformers' ``head_mask`` on the attention probabilities (context = probabilities x values),
    for every family, and summed over every use of a shared (ALBERT) layer."""
    family = family_of(module)
    family.check_head_pruning(module)
    layers, config = family.layer_list(module), module.config
    if getattr(config, "pruned_heads", None):
        raise UnsupportedError("this model already had heads pruned; prune heads once, with the whole amount")
    heads = family.num_heads(config)
    outputs = [family.part(layer, family.attention_output) for layer in layers]
    size = outputs[0].in_features // heads
    if params.importance == "gradient":
        scores = torch.stack(gradient_importance_through(module, tokenizer, ctx, params, outputs,
                                                         [heads] * len(layers), width=size))
        return scores / scores.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # per-layer normalisation (Michel et al.)
    scores = []
    for layer, output in zip(layers, outputs):
        reads = [linear.weight for linear in family.head_projections(layer)]
        per_head = sum(w.detach().reshape(heads, size, -1).pow(2).sum(dim=(1, 2)) for w in reads)
        per_head = per_head + output.weight.detach().reshape(-1, heads, size).pow(2).sum(dim=(0, 2))
        scores.append(per_head.sqrt())
    return torch.stack(scores)


def heads_to_prune(scores: torch.Tensor, amount: float) -> dict[int, list[int]]:
    """The lowest-scoring ``amount`` of all heads, never a layer's last head."""
    layers, heads = scores.shape
    budget = round(amount * layers * heads)
    left = [heads] * layers
    chosen: dict[int, list[int]] = {}
    for flat in torch.argsort(scores.flatten(), stable=True).tolist():
        if budget == 0:
            break
        layer, head = divmod(flat, heads)
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
            budget -= 1
    return {layer: sorted(found) for layer, found in sorted(chosen.items())}


def prune_heads(module, tokenizer, source: ModelArtifact, params: PruneParams, ctx: CompressContext) -> ModelArtifact:
    scores = head_importance(module, tokenizer, ctx, params)
    chosen = heads_to_prune(scores, params.amount)
    # rebuilds q/k/v and the output projection smaller, and records the heads in config.pruned_heads (so
    # from_pretrained prunes the same heads again); layers are physical ones (ALBERT: shared layers)
    module.prune_heads(chosen)
    record = {"heads_pruned": {str(layer): heads for layer, heads in chosen.items()},
              "heads_removed": sum(len(h) for h in chosen.values()), "heads_total": scores.numel(),
              "head_scores": scores.round(decimals=4).tolist()}
    return save_structured(module, tokenizer, source, params, ctx, record)


def neuron_importance(module, tokenizer, ctx, params: PruneParams) -> list[torch.Tensor]:
    """Per physical layer, a score per FFN neuron; higher = more important (gradient: the masks sit on the
    FFN's down projection's input, the activated neurons)."""
    family = family_of(module)
    layers = family.layer_list(module)
    ups = [family.part(layer, family.ffn_in) for layer in layers]
    downs = [family.part(layer, family.ffn_out) for layer in layers]
    if params.importance == "weight":
        return [up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0) for up, down in zip(ups, downs)]
    return gradient_importance_through(module, tokenizer, ctx, params, downs, [up.out_features for up in ups])


def kept_neurons(width: int, amount: float) -> int:
    """Neurons kept per layer: ``width * (1 - amount)`` rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(width * (1 - amount) / 8)) * 8)


def shrink_ffn(module, kept: list[torch.Tensor]) -> None:
    """Keep only the FFN neurons ``kept[layer]`` (indices, the same count in every layer):
    rows of the up-projection, columns of the down-projection."""
    from transformers.pytorch_utils import prune_linear_layer

    family = family_of(module)
    for layer, index in zip(family.layer_list(module), kept):
        index = torch.sort(index).values
        family.replace_part(layer, family.ffn_in, prune_linear_layer(family.part(layer, family.ffn_in), index, dim=0))
        family.replace_part(layer, family.ffn_out, prune_linear_layer(family.part(layer, family.ffn_out), index, dim=1))
    setattr(module.config, family.config.ffn, len(kept[0]))


def prune_ffn(module, tokenizer, source: ModelArtifact, params: PruneParams, ctx: CompressContext) -> ModelArtifact:
    scores = neuron_importance(module, tokenizer, ctx, params)
    width = family_of(module).ffn_size(module.config)
    keep = kept_neurons(width, params.amount)
    shrink_ffn(module, [torch.argsort(layer_scores, descending=True, stable=True)[:keep] for layer_scores in scores])
    record = {"intermediate_size": [width, keep], "neurons_removed_per_layer": width - keep}
    return save_structured(module, tokenizer, source, params, ctx, record)


def save_structured(
    module, tokenizer, source: ModelArtifact, params: PruneParams, ctx: CompressContext, record: dict
) -> ModelArtifact:
    record.update(score_and_recover(module, tokenizer, source, params.recovery, ctx, f"prune {params.method}"))
    record["params_after"] = int(sum(np.prod(p.shape) for p in module.parameters()))
    return save_hf_artifact(ctx.work_dir, module, tokenizer, task=source.task, lineage=[record])


METHODS = {"magnitude": prune_magnitude, "wanda": prune_by_score, "two-four": prune_by_score,
           "heads": prune_heads, "ffn": prune_ffn}
UNSTRUCTURED = ("magnitude", "wanda", "two-four")   # stored hf-sparse; the rest rebuild smaller layers
