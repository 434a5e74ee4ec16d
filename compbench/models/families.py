"""Where each encoder family keeps its layers: one declarative entry per family, looked up by
the config's ``model_type``.

Quantization, magnitude pruning and SVD work on any ``nn.Linear``; what needs to know the
layout (head and FFN pruning, layer-subset and smaller-config students, layer matching, the
default ``modules`` of magnitude pruning and SVD) asks this table, never the model type itself.

An entry names, from the task model (``AutoModelForSequenceClassification``):

- ``layers``: the path of the transformer layers' ``ModuleList``. A ``*`` steps into every element of a
  list on the way: ALBERT keeps ``albert.encoder.albert_layer_groups.*.albert_layers``, the physical
  (possibly shared) layers, groups flattened in order, as transformers' ALBERT ``prune_heads`` counts them.
- per layer, the attention's ``query``/``key``/``value`` projections and its ``attention_output``
  projection (which reads the heads' concatenated context), and the FFN's ``ffn_in`` (up) and ``ffn_out``
  (down) Linears; paths inside the layer.
- ``config``: the config fields holding the layer count, hidden width, head count and FFN width
  (DistilBERT: ``n_layers``, ``dim``, ``n_heads``, ``hidden_dim``), and fields that must follow the hidden
  width when a smaller student is derived (DeBERTa's ``pooler_hidden_size``).
- ``head_pruning``: empty where transformers' ``prune_heads`` rebuilds q/k/v/o smaller *and* records the
  pruned heads in the config so the saved model loads again; otherwise why heads cannot be pruned.
- ``whole_embeddings``: ``nn.Embedding`` modules whose weight the model reads as a tensor rather than
  looking rows up (DeBERTa's relative position table): 8-bit weight-only quantization leaves them float.
- ``shared_layers``: the layers' weights are shared (ALBERT: ``num_hidden_layers`` applications of
  ``num_hidden_groups`` groups), so the physical layers are not the layers a forward pass counts.
  Head and FFN pruning act on the physical layers (a neuron or head removed from a shared layer is removed
  from every application of it; its importance is summed over them); a layer-subset student cannot pick
  layers (every layer is the same weights): ``num_layers`` (a smaller-config student) applies the shared
  layer fewer times instead.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from compbench.common.errors import UnsupportedError
from compbench.models.kinds import CAUSAL_LM, model_kind

# Linear layers inside BERT-style encoder layers: the default ``modules`` of magnitude pruning and SVD for a
# model type without an entry here.
GENERIC_LAYER_LINEARS = r"encoder\.layer\.\d+\."
# ... and inside the decoder layers of a causal LM without an entry (``model.layers.N.``, as Llama-style models
# name them): never the token embeddings or the LM head, which sit outside the layers.
GENERIC_DECODER_LINEARS = r"(^|\.)layers\.\d+\."


@dataclass(frozen=True)
class ConfigNames:
    """The config fields of a family's sizes."""

    layers: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    ffn: str = "intermediate_size"
    follow_hidden: tuple[str, ...] = ()     # further fields equal to the hidden width (set with it)


@dataclass(frozen=True)
class Family:
    name: str                               # as a report names it
    model_types: tuple[str, ...]            # config.model_type values it covers
    layers: str
    query: str | None
    key: str | None
    value: str | None
    attention_output: str
    ffn_in: str
    ffn_out: str
    ffn_gate: str | None = None             # a gated FFN's gate projection (Llama's gate_proj), read as ffn_in is
    config: ConfigNames = field(default_factory=ConfigNames)
    head_pruning: str = ""                  # why heads cannot be pruned; "" = transformers' prune_heads
    shared_layers: bool = False
    whole_embeddings: tuple[str, ...] = ()  # Embedding modules whose weight the model reads whole, not by lookup

    # ------------------------------------------------------------ sizes (config fields)

    def num_layers(self, config) -> int:
        """Layers a forward pass runs (for ALBERT: applications of the shared groups)."""
        return getattr(config, self.config.layers)

    def hidden_size(self, config) -> int:
        return getattr(config, self.config.hidden)

    def num_heads(self, config) -> int:
        return getattr(config, self.config.heads)

    def ffn_size(self, config) -> int:
        return getattr(config, self.config.ffn)

    def resized_config(self, config, *, layers: int | None = None, hidden: int | None = None,
                       heads: int | None = None, ffn: int | None = None):
        """A copy of ``config`` with the sizes given (None: unchanged)."""
        config = copy.deepcopy(config)
        for name, value in ((self.config.layers, layers), (self.config.heads, heads), (self.config.ffn, ffn)):
            if value is not None:
                setattr(config, name, value)
        if hidden is not None:
            for name in (self.config.hidden, *self.config.follow_hidden):
                setattr(config, name, hidden)
        return config

    # ------------------------------------------------------------ where the layers are

    def layer_list(self, model) -> list:
        """The physical transformer layers, in order (ALBERT: each group's layers, groups in order)."""
        found = [model]
        for part in self.layers.split("."):
            if part == "*":
                found = [child for parent in found for child in parent]
            else:
                found = [getattr(parent, part, None) for parent in found]
                if any(module is None for module in found):
                    raise UnsupportedError(f"{type(model).__name__} has no {self.layers} (the {self.name} layout); "
                                           "it is not the layout its model_type says")
        return [layer for layers in found for layer in layers]

    def layer_linears(self) -> str:
        """Regex over qualified module names: the modules inside the transformer layers."""
        return "^" + r"\.\d+\.".join(re.escape(part) for part in self.layers.split(".*.")) + r"\.\d+\."

    def layer_keys(self) -> re.Pattern | None:
        """Regex over state-dict keys: (prefix, layer index, rest) of a layer's weights; None when
        the layers are shared (their keys index weight groups, not layers)."""
        if self.shared_layers:
            return None
        return re.compile(rf"^({re.escape(self.layers)}\.)(\d+)(\..*)$")

    @staticmethod
    def part(layer, path: str):
        return layer.get_submodule(path)

    @staticmethod
    def replace_part(layer, path: str, module) -> None:
        parent, _, child = path.rpartition(".")
        setattr(layer.get_submodule(parent) if parent else layer, child, module)

    def head_projections(self, layer) -> list:
        """The Linears whose output rows are grouped by head: query, key, value."""
        return [self.part(layer, path) for path in (self.query, self.key, self.value)]

    # ------------------------------------------------------------ what each compressor may do

    def check_head_pruning(self, model) -> None:
        """Refuse (``UnsupportedError``, with the reason) a family whose heads cannot be pruned and loaded again."""
        if self.head_pruning:
            raise UnsupportedError(f"{self.name} heads cannot be pruned: {self.head_pruning} "
                                   f"(transformers {_transformers_version()})")
        if not callable(getattr(model.base_model, "_prune_heads", None)):
            raise UnsupportedError(f"{self.name}: transformers {_transformers_version()} has no prune_heads for "
                                   f"{type(model.base_model).__name__}")

    def check_layer_subset(self) -> None:
        """Refuse a layer-subset student where layers share weights."""
        if self.shared_layers:
            raise UnsupportedError(
                f"{self.name} shares one set of layer weights across its layers ({self.config.layers} applications "
                "of num_hidden_groups shared groups): a subset of layers would be the same layers applied fewer "
                "times whichever are picked; give the student num_layers instead"
            )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


BERT_LAYER = dict(query="attention.self.query", key="attention.self.key", value="attention.self.value",
                  attention_output="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense")

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    for model_type in family.model_types:
        FAMILIES[model_type] = family
    return family


register_family(Family("BERT/MiniLM", ("bert",), "bert.encoder.layer", **BERT_LAYER))
register_family(Family("RoBERTa", ("roberta",), "roberta.encoder.layer", **BERT_LAYER))
register_family(Family("XLM-R", ("xlm-roberta",), "roberta.encoder.layer", **BERT_LAYER))
register_family(Family("ELECTRA", ("electra",), "electra.encoder.layer", **BERT_LAYER))
register_family(Family(
    "DistilBERT", ("distilbert",), "distilbert.transformer.layer",
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin", attention_output="attention.out_lin",
    ffn_in="ffn.lin1", ffn_out="ffn.lin2",
    config=ConfigNames(layers="n_layers", hidden="dim", heads="n_heads", ffn="hidden_dim"),
))
# What DeBERTa v1 and v2/v3 share besides their layers: the relative-position table read whole, and no head pruning.
DEBERTA = dict(
    config=ConfigNames(follow_hidden=("pooler_hidden_size",)), whole_embeddings=("deberta.encoder.rel_embeddings",),
    head_pruning="transformers' DeBERTa (v1 and v2) implements no prune_heads (it raises), and its config "
                 "holds one head count for every layer, so a model with heads pruned per layer would not load again",
)
register_family(Family(
    "DeBERTa-v2/v3", ("deberta-v2",), "deberta.encoder.layer",
    query="attention.self.query_proj", key="attention.self.key_proj", value="attention.self.value_proj",
    attention_output="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    **DEBERTA,
))
register_family(Family(
    "DeBERTa", ("deberta",), "deberta.encoder.layer",
    query=None, key=None, value=None,                # one fused in_proj (q, k, v interleaved per head)
    attention_output="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
    **DEBERTA,
))
register_family(Family(
    "ALBERT", ("albert",), "albert.encoder.albert_layer_groups.*.albert_layers",
    query="attention.query", key="attention.key", value="attention.value", attention_output="attention.dense",
    ffn_in="ffn", ffn_out="ffn_output", shared_layers=True,
))
register_family(Family(
    "MPNet", ("mpnet",), "mpnet.encoder.layer",
    query="attention.attn.q", key="attention.attn.k", value="attention.attn.v", attention_output="attention.attn.o",
    ffn_in="intermediate.dense", ffn_out="output.dense",
    head_pruning="transformers' MPNet prune_heads shrinks q/k/v/o but not the relative position bias that all "
                 "layers share (one column per head), so a pruned layer no longer runs",
))


# Llama-style decoders (the causal LM and its sequence-classification head keep the layers at model.layers): a
# gated FFN, grouped-query attention. No head pruning: transformers implements no prune_heads for them.
register_family(Family(
    "Llama-style decoder", ("llama", "mistral", "qwen2"), "model.layers",
    query="self_attn.q_proj", key="self_attn.k_proj", value="self_attn.v_proj", attention_output="self_attn.o_proj",
    ffn_in="mlp.up_proj", ffn_out="mlp.down_proj", ffn_gate="mlp.gate_proj",
    head_pruning="transformers implements no prune_heads for Llama-style decoders, and with grouped-query "
                 "attention a query head cannot go without the key/value head it shares",
))


def family_of(model_or_config) -> Family:
    """The family of a model (or its config), by ``config.model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise UnsupportedError(
            f"no layer layout is known for model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        ) from None


def layer_linears(model) -> str:
    """Regex over module names selecting the Linears inside the transformer layers: the family's, or for a model
    type without an entry the BERT-style ``encoder.layer.N.`` naming (a causal LM: ``layers.N.``; magnitude pruning
    and SVD work on any Linear, so they do not need the table)."""
    try:
        return family_of(model).layer_linears()
    except UnsupportedError:
        config = getattr(model, "config", model)       # a model or its config
        causal = model_kind(config) == CAUSAL_LM or type(model).__name__.endswith("ForCausalLM")
        return GENERIC_DECODER_LINEARS if causal else GENERIC_LAYER_LINEARS



def whole_embeddings(model) -> tuple[str, ...]:
    """Names of the Embedding modules ``model`` reads whole (none for a model type without an entry)."""
    try:
        return family_of(model).whole_embeddings
    except UnsupportedError:
        return ()


# What a tokenizer may give a model; which of them a model takes is its forward's business.
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


def forward_inputs(model) -> tuple[str, ...]:
    """The tokenizer outputs ``model``'s forward takes, in ``TOKENIZER_OUTPUTS`` order (DistilBERT and MPNet
    take no ``token_type_ids``); all of them where its forward does not name ``input_ids`` (nothing to tell)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    if "input_ids" not in parameters:
        return TOKENIZER_OUTPUTS
    return tuple(name for name in TOKENIZER_OUTPUTS if name in parameters)
