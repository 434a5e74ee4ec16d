"""Which tokenizer outputs each backend feeds: what the model takes, whatever the tokenizer gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compbench.cache.store import ArtifactStore
from compbench.common.plugins import BACKENDS
from compbench.config.backends import BackendOptions
from compbench.models.artifact import save_hf_artifact
from compbench.models.families import forward_inputs
from compbench.models.onnx_export import export_module


def logits_on(artifact, backend: str, batch: dict[str, np.ndarray]) -> np.ndarray:
    session = BACKENDS.get(backend)().load(artifact, BackendOptions(name=backend, threads=1))
    try:
        return session.run(batch)
    finally:
        session.close()


@pytest.fixture(scope="module")
def distilbert(minilm_path, tmp_path_factory):
    """A tiny DistilBERT (no segment embeddings) with the MiniLM tokenizer, which gives token_type_ids."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2,
                                                                 hidden_dim=64, num_labels=2)).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    store = ArtifactStore(tmp_path_factory.mktemp("distilbert"))
    return store.build("d", lambda folder: save_hf_artifact(folder, model, tokenizer, task="sst2", lineage=[]))


def batch_of(tokenizer) -> dict[str, np.ndarray]:
    encoded = tokenizer(["a fine film", "dull and long"], padding=True, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def test_a_model_without_segments_ignores_the_tokenizers_token_type_ids_on_both_backends(distilbert):
    batch = batch_of(distilbert.tokenizer())
    assert "token_type_ids" in batch
    on_torch, on_ort = logits_on(distilbert, "torch", batch), logits_on(distilbert, "onnxruntime", batch)
    np.testing.assert_allclose(on_ort, on_torch, atol=1e-5)
    assert on_torch.shape == (2, 2)


def test_a_graph_taking_token_type_ids_gets_zeros_when_the_tokenizer_gives_none(tiny_artifact):
    full = batch_of(tiny_artifact.tokenizer())
    assert not full["token_type_ids"].any()              # single sentences: segment 0 throughout
    without = {k: v for k, v in full.items() if k != "token_type_ids"}
    np.testing.assert_allclose(logits_on(tiny_artifact, "onnxruntime", without),
                               logits_on(tiny_artifact, "onnxruntime", full), atol=1e-7)
    np.testing.assert_allclose(logits_on(tiny_artifact, "torch", without),
                               logits_on(tiny_artifact, "torch", full), atol=1e-7)


def test_the_torch_exporter_takes_what_the_forward_takes_and_segments_only_where_there_are_several(tmp_path):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        MPNetConfig,
        MPNetForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    sizes = dict(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    expected = {"bert": (BertForSequenceClassification(BertConfig(**sizes)), ["input_ids", "attention_mask",
                                                                                 "token_type_ids"]),
                "roberta": (RobertaForSequenceClassification(RobertaConfig(**sizes, type_vocab_size=1)),  # roberta-base
                            ["input_ids", "attention_mask"]),
                "mpnet": (MPNetForSequenceClassification(MPNetConfig(**sizes)), ["input_ids", "attention_mask"])}
    for name, (model, inputs) in expected.items():
        folder = tmp_path / name
        folder.mkdir()
        export_module(model, folder)
        graph = onnx.load(str(folder / "model.onnx")).graph
        assert [i.name for i in graph.input] == inputs, name
    assert forward_inputs(expected["mpnet"][0]) == ("input_ids", "attention_mask")
