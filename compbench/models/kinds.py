"""What a model folder holds, by its transformers config: a sequence classifier or a causal LM, and the
transformers Auto class that builds each. Imported by the formats, the ONNX export and the families alike, so it
imports none of them."""

from __future__ import annotations

from pathlib import Path

SEQUENCE_CLASSIFICATION, CAUSAL_LM = "sequence-classification", "causal-lm"
MODEL_KINDS = (SEQUENCE_CLASSIFICATION, CAUSAL_LM)


def model_kind(config) -> str:
    """What a transformers ``config`` describes: a causal LM (its architecture ends ``ForCausalLM``, or the config
    of a decoder-only family without a classification head) or a sequence classifier (everything else)."""
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return CAUSAL_LM
    return SEQUENCE_CLASSIFICATION


def auto_model_class(kind: str):
    """transformers' Auto class that builds a model of ``kind``."""
    import transformers

    return {SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
            CAUSAL_LM: transformers.AutoModelForCausalLM}[kind]


def model_from_config(folder: Path):
    """The folder's architecture with fresh weights, for formats that load their own state."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    return auto_model_class(model_kind(config)).from_config(config)
