"""Pruning and SVD: rebuilt layers compute what the masked originals compute (real MiniLM
weights, real SST-2 rows), the sparse and low-rank formats round-trip through PyTorch and
ONNX Runtime, the SVD rank rules and break-even, and clear errors for bad parameters."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compbench.cache.store import ArtifactStore
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.compressors.prune import PruneParams, heads_to_prune, kept_neurons, shrink_ffn
from compbench.compressors.svd import SvdParams, break_even_rank, chosen_rank, factorise
from compbench.config.backends import BackendOptions
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.tasks.data import load_task_data
from compbench.tasks.encoding import encode_rows, pad_batch
from compbench.tasks.glue import get_task
from compbench.tasks.sources import ParquetFolderSource
from compbench.training.finetune import load_base_for_task


@pytest.fixture(scope="module")
def minilm_and_batch(minilm_path, glue_data):
    """The real MiniLM (seeded fresh head) and 8 real SST-2 validation rows, padded."""
    torch.manual_seed(0)
    model, tokenizer = load_base_for_task(str(minilm_path), get_task("sst2"))
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=8, limit_eval=8)
    rows = encode_rows(tokenizer, data.task, data.eval["validation"], 64)
    batch = {k: torch.from_numpy(v) for k, v in pad_batch(tokenizer, rows.features).items()}
    return model.eval(), batch


def logits(model, batch, **extra) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **extra).logits


def test_pruned_heads_compute_what_the_masked_heads_compute(minilm_and_batch):
    model, batch = minilm_and_batch
    chosen = {0: [1, 3], 2: [0], 5: [4, 5, 6, 11]}
    mask = torch.ones(model.config.num_hidden_layers, model.config.num_attention_heads)
    for layer, heads in chosen.items():
        mask[layer, heads] = 0
    pruned = copy.deepcopy(model)
    pruned.prune_heads(chosen)
    assert pruned.bert.encoder.layer[5].attention.self.query.out_features == (12 - 4) * 32
    torch.testing.assert_close(logits(pruned, batch), logits(model, batch, head_mask=mask), atol=1e-5, rtol=0)


def test_removed_ffn_neurons_compute_what_the_masked_neurons_compute(minilm_and_batch):
    model, batch = minilm_and_batch
    generator = torch.Generator().manual_seed(1)
    kept = [torch.randperm(1536, generator=generator)[:920] for _ in range(6)]
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, index in zip(masked.bert.encoder.layer, kept):
            dropped = torch.ones(1536, dtype=torch.bool)
            dropped[index] = False
            layer.output.dense.weight[:, dropped] = 0            # the neuron's output never reaches the residual
    shrunk = copy.deepcopy(model)
    shrink_ffn(shrunk, kept)
    assert shrunk.config.intermediate_size == 920 and shrunk.bert.encoder.layer[0].output.dense.in_features == 920
    torch.testing.assert_close(logits(shrunk, batch), logits(masked, batch), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(shrunk, batch), logits(model, batch), atol=1e-3)   # and something was removed


def test_heads_to_prune_takes_the_lowest_and_leaves_every_layer_a_head():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.05, 0.01, 0.02]])
    assert heads_to_prune(scores, 0.34) == {1: [1, 2]}                    # 2 of 6: the lowest two
    assert heads_to_prune(scores, 0.5) == {0: [0], 1: [1, 2]}              # 3: layer 1 keeps head 0, its best
    assert heads_to_prune(scores, 0.99) == {0: [0, 2], 1: [1, 2]}          # one head per layer stays
    assert kept_neurons(1536, 0.4) == 920 and kept_neurons(16, 0.99) == 8


def test_svd_at_full_rank_reproduces_the_layer(minilm_and_batch):
    model, _ = minilm_and_batch
    linear = model.bert.encoder.layer[0].intermediate.dense          # 1536 x 384
    x = torch.randn(4, 384, generator=torch.Generator().manual_seed(0))
    singular = tuple(t.float() for t in torch.linalg.svd(linear.weight.detach().double(), full_matrices=False))
    full = factorise(linear, 384, singular)
    torch.testing.assert_close(full(x), linear(x), atol=1e-5, rtol=0)
    assert full[0].weight.shape == (384, 384) and full[1].weight.shape == (1536, 384)
    low = factorise(linear, 32, singular)
    assert (full(x) - linear(x)).abs().max() < (low(x) - linear(x)).abs().max()


def test_svd_rank_rules_and_break_even():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])                              # squares 16, 4, 1, 1 of 22
    assert chosen_rank(s, 8, 8, SvdParams(rank=2)) == 2 and chosen_rank(s, 8, 8, SvdParams(rank=9)) == 4
    assert chosen_rank(s, 8, 8, SvdParams(energy=16 / 22)) == 1
    assert chosen_rank(s, 8, 8, SvdParams(energy=0.75)) == 2 and chosen_rank(s, 8, 8, SvdParams(energy=1.0)) == 4
    assert break_even_rank(384, 384) == 192 and break_even_rank(1536, 384) == pytest.approx(307.2)
    assert chosen_rank(torch.ones(384), 384, 384, SvdParams(ratio=0.5)) == 96    # half of 384*384 / 768


@pytest.mark.parametrize("params, message", [
    ({"rank": 0}, "greater than or equal to 1"),
    ({"energy": 1.5}, "less than or equal to 1"),
    ({"ratio": 1.0}, "less than 1"),
    ({"rank": 8, "ratio": 0.5}, "exactly one of rank, energy or ratio; got rank, ratio"),
    ({}, "exactly one of rank, energy or ratio; got none"),
    ({"ratio": 0.5, "modules": "layer.(["}, "not a valid regular expression"),
])
def test_bad_svd_parameters(params, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("[", r"\[")):
        SvdParams.model_validate(params)


@pytest.mark.parametrize("params, message", [
    ({"method": "magnitude", "amount": 0.0}, "greater than 0"),
    ({"method": "magnitude", "amount": 1.0}, "less than 1"),
    ({"method": "ffn", "amount": 0.4, "scope": "per_layer"}, "method 'ffn' does not use scope"),
    ({"method": "heads", "amount": 0.2, "modules": "query"}, "method 'heads' does not use modules"),
    ({"method": "magnitude", "amount": 0.5, "importance": "weight"}, "method 'magnitude' does not use importance"),
    ({"method": "sparsegpt", "amount": 0.5}, "'magnitude', 'heads' or 'ffn'"),
])
def test_bad_prune_parameters(params, message):
    with pytest.raises(ValidationError, match=message):
        PruneParams.model_validate(params)


@pytest.fixture()
def build(responsive, glue_data, tmp_path):
    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=64, limit_eval=32)
    return PipelineBuild(responsive, data, ArtifactStore(tmp_path), seed=0, device="cpu",
                         reporter=Reporter(enabled=False), max_seq_len=32)


def run_step(build, compressor: str, params: dict):
    return build.run(PipelineConfig(name="p", steps=[StepConfig(compressor=compressor, params=params)]))


def ort_matches_torch(artifact, build) -> None:
    """The artifact's ONNX export on ONNX Runtime gives the PyTorch module's logits."""
    tokenizer = artifact.tokenizer()
    rows = encode_rows(tokenizer, build.data.task, build.data.eval["validation"][:4], 32)
    batch = pad_batch(tokenizer, rows.features)
    session = BACKENDS.get("onnxruntime")().load(artifact, BackendOptions(name="onnxruntime"))
    try:
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        np.testing.assert_allclose(session.run(batch), logits(artifact.torch_model(), tensors).numpy(), atol=1e-4)
    finally:
        session.close()


def test_magnitude_pruning_is_stored_sparse_and_runs_dense_everywhere(build, responsive):
    artifact = run_step(build, "prune", {"method": "magnitude", "amount": 0.8,
                                         "recovery": {"train": {"max_steps": 2, "batch_size": 16}}})
    assert artifact.format == "hf-sparse"
    record = artifact.lineage[-1]
    assert record["sparsity"] == pytest.approx(0.8, abs=0.01) and record["pruned_modules"] == 12
    assert record["recovery"]["steps"] == 2 and "score_before_recovery" in record
    params, nonzero = artifact.parameter_counts()
    assert params == responsive.parameter_counts()[0] and nonzero < params
    pruned = [m.weight for n, m in artifact.torch_model().named_modules()
              if isinstance(m, torch.nn.Linear) and "encoder.layer" in n]
    layer_weights = sum(w.numel() for w in pruned)
    zeros = sum(int((w == 0).sum()) for w in pruned)
    assert zeros == pytest.approx(0.8 * layer_weights, abs=2)       # recovery kept the pruned weights at zero
    dense_bytes = sum(p.stat().st_size for p in responsive.deployed_files() if p.suffix == ".safetensors")
    sparse_bytes = artifact.deployed_files()[0].stat().st_size
    # the encoder Linears (about 0.8 of them gone) are a minority of this tiny model's weights (embeddings dominate)
    assert sparse_bytes < dense_bytes - 0.7 * 4 * layer_weights
    ort_matches_torch(artifact, build)


def test_structured_pruning_rebuilds_smaller_layers_that_export(build, responsive):
    heads = run_step(build, "prune", {"method": "heads", "amount": 0.5, "importance": "gradient",
                                      "importance_rows": 32})
    record = heads.lineage[-1]
    # 1 of 2 in each layer
    assert heads.format == "hf" and record["heads_removed"] == 2 and len(record["heads_pruned"]) == 2
    module = heads.torch_model()
    assert module.bert.encoder.layer[0].attention.self.query.out_features == 16
    ort_matches_torch(heads, build)
    step = StepConfig(compressor="prune", params={"method": "ffn", "amount": 0.5, "importance": "weight"})
    ffn = build.apply(heads, step, "t")
    assert ffn.torch_model().config.intermediate_size == 32 and ffn.parameter_counts()[0] < heads.parameter_counts()[0]
    ort_matches_torch(ffn, build)


def test_svd_factorises_below_break_even_and_exports(build):
    artifact = run_step(build, "svd", {"rank": 12,
                                       "recovery": {"alpha": 0.5, "train": {"max_steps": 2, "batch_size": 16}}})
    record = artifact.lineage[-1]
    # hidden 32, FFN 64: break-even is 16 for 32x32 and 21.3 for 64x32, so rank 12 factorises all 12 Linears
    assert artifact.format == "hf-low-rank" and len(record["ranks"]) == 12 and record["left_dense"] == {}
    assert record["recovery"]["teachers"] == 1
    assert isinstance(artifact.torch_model().bert.encoder.layer[0].attention.self.query, torch.nn.Sequential)
    ort_matches_torch(artifact, build)
    # rank 20: the 32x32 attention Linears (break-even 16) stay dense; the 64x32 FFN ones (21.3) factorise
    partly = run_step(build, "svd", {"rank": 20}).lineage[-1]
    assert len(partly["left_dense"]) == 8 and all(".attention." in name for name in partly["left_dense"])
    assert len(partly["ranks"]) == 4 and not any(".attention." in name for name in partly["ranks"])


def test_per_layer_magnitude_pruning_hits_the_amount_in_every_chosen_layer(build):
    artifact = run_step(build, "prune", {"method": "magnitude", "amount": 0.5, "scope": "per_layer",
                                         "modules": r"\.intermediate\.dense$"})
    record = artifact.lineage[-1]
    assert record["pruned_modules"] == 2 and set(record["sparsity_per_module"].values()) == {0.5}
    module = artifact.torch_model()
    assert int((module.bert.encoder.layer[0].attention.self.query.weight == 0).sum()) == 0   # not selected: untouched
    with pytest.raises(ValueError, match=r"no nn.Linear matches 'nothing\\.here'"):
        run_step(build, "prune", {"method": "magnitude", "amount": 0.5, "modules": r"nothing\.here"})
