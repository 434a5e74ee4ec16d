"""The quantize compressor's torch-side methods on causal LMs: torchao int8 weight-only, int8 dynamic, int4
weight-only (CPU kernel), PyTorch dynamic INT8 and bitsandbytes (LLM.int8, NF4), on the tiny random Llama
(plumbing: each builds, reloads from what it stored, follows fp32, stores fewer bytes, runs no pickle) and, once,
on the real SmolLM2-135M (int8 weight-only perplexity within 5% of fp32).

Logit bounds are relative to the largest fp32 logit of a random batch, each above what was measured here
(noted beside it).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnreadableArtifactError, UnsupportedError
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import Quantize, QuantizeParams
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.torchao import SCHEMES, TORCHAO_SPEC, TORCHAO_WEIGHTS, quantize_torchao

# method -> (params, relative logit bound, at most this share of the fp32 linear weights' bytes stays on disk);
# measured: (error, share kept)
TORCH_METHODS = {
    "torchao-int8-weight-only": ({}, 0.015, 0.3),                     # (0.0055, 0.281)
    "torchao-int8-dynamic": ({}, 0.02, 0.3),                          # (0.0088, 0.281)
    "torchao-int4-weight-only": ({"group_size": 32}, 0.1, 0.22),      # (0.056, 0.200): fp32 scale + zero a group
    "dynamic": ({"embeddings": False}, 0.03, 0.35),                   # (0.014, 0.310): torch.save's overhead
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("llm-quantized"))


def quantized(store: ArtifactStore, model: ModelArtifact, **params) -> ModelArtifact:
    compressor = Quantize(QuantizeParams(**params))
    key = "-".join(f"{name}={value}" for name, value in sorted(params.items()))

    def build(folder):
        ctx = CompressContext(data=None, teacher=model, seed=0, device="cpu", work_dir=folder,
                              reporter=Reporter(enabled=False))
        return compressor.compress(model, ctx)
    return store.build(key, build)


@pytest.fixture(scope="module")
def batch():
    return torch.randint(0, 30000, (2, 24), generator=torch.Generator().manual_seed(0))


def logits(artifact: ModelArtifact, batch) -> torch.Tensor:
    with torch.no_grad():
        return artifact.torch_model().eval()(input_ids=batch).logits


def linear_bytes(model) -> int:
    head = model.get_output_embeddings()
    return sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


@pytest.mark.parametrize("method", sorted(TORCH_METHODS))
def test_each_method_builds_reloads_and_follows_fp32(method, store, tiny_causal_lm, batch, one_torch_thread):
    params, bound, kept = TORCH_METHODS[method]
    artifact = quantized(store, tiny_causal_lm, method=method, **params)
    assert artifact.kind == "causal-lm" and artifact.is_causal_lm
    reference = logits(tiny_causal_lm, batch)
    error = (logits(artifact, batch) - reference).abs().max() / reference.abs().max()
    assert error < bound, f"{method}: relative logit error {error:.4f}"
    saved = tiny_causal_lm.size_bytes() - artifact.size_bytes()
    assert saved > (1 - kept) * linear_bytes(tiny_causal_lm.torch_model())
    model = artifact.torch_model()
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    assert type(model.get_output_embeddings().weight) is torch.nn.Parameter      # the head stays float
    assert model.get_output_embeddings().weight.dtype == torch.float32


def test_torchao_artifacts_hold_plain_integers_only(store, tiny_causal_lm):
    from safetensors import safe_open

    artifact = quantized(store, tiny_causal_lm, method="torchao-int4-weight-only", group_size=32)
    assert sorted(p.name for p in artifact.deployed_files()) == sorted(["config.json", TORCHAO_SPEC, TORCHAO_WEIGHTS])
    spec = json.loads((artifact.path / TORCHAO_SPEC).read_text())
    assert spec["method"] == "int4-weight-only" and spec["group_size"] == 32
    assert "lm_head" not in spec["modules"] and len(spec["modules"]) == 2 * 7
    assert spec["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}      # tied: stored once
    with safe_open(str(artifact.path / TORCHAO_WEIGHTS), framework="pt") as stored:
        q_proj = "model.layers.0.self_attn.q_proj.weight::"
        assert stored.get_tensor(q_proj + "int4").dtype == torch.uint8
        assert stored.get_tensor(q_proj + "int4").shape == (64, 32)               # two 4-bit values a byte
        assert stored.get_tensor(q_proj + "scale").shape == (64, 2)               # one per group of 32
    with pytest.raises(UnsupportedError, match="do not export to ONNX"):
        artifact.onnx_files()
    total, nonzero = artifact.parameter_counts()
    assert total == sum(p.numel() for p in tiny_causal_lm.torch_model().parameters())
    assert 0 < nonzero <= total


@pytest.mark.parametrize("method,group_size", [("int8-weight-only", None), ("int8-dynamic", None),
                                               ("int4-weight-only", 64)])
def test_rebuilt_weights_are_torchaos_bit_for_bit(method, group_size, tiny_causal_lm, one_torch_thread):
    """What loading rebuilds from the stored integers is what torchao's quantize_ made (build checks it too)."""
    model, spec, plain = quantize_torchao(tiny_causal_lm.torch_model().eval(), method, include_head=False,
                                          group_size=group_size)
    weight = dict(model.named_modules())["model.layers.1.mlp.down_proj"].weight
    rebuilt = SCHEMES[method].rebuild(plain["model.layers.1.mlp.down_proj"], spec)
    for part in weight.tensor_data_names:
        assert torch.equal(getattr(rebuilt, part), getattr(weight, part))
    x = torch.randn(3, weight.shape[1])
    assert torch.equal(torch.nn.functional.linear(x, rebuilt), torch.nn.functional.linear(x, weight))


def test_the_head_is_quantized_only_when_asked(store, tiny_causal_lm, one_torch_thread):
    artifact = quantized(store, tiny_causal_lm, method="torchao-int8-dynamic", include_head=True)
    spec = json.loads((artifact.path / TORCHAO_SPEC).read_text())
    assert "lm_head" in spec["modules"] and spec["aliases"] == {}
    model = artifact.torch_model()
    assert type(model.lm_head.weight).__name__ == "Int8Tensor"
    assert type(model.model.embed_tokens.weight) is torch.nn.Parameter          # untied: the table stays float
    tied = quantized(store, tiny_causal_lm, method="dynamic").torch_model()     # embeddings int8, head float
    assert type(tied.lm_head) is torch.nn.Linear
    assert type(tied.model.embed_tokens).__module__.startswith("torch.ao.nn.quantized")
    dynamic = quantized(store, tiny_causal_lm, method="dynamic", include_head=True)
    assert type(dynamic.torch_model().lm_head).__name__ == "Linear" and \
        type(dynamic.torch_model().lm_head).__module__.startswith("torch.ao.nn.quantized")


def test_int4_refuses_what_the_cpu_kernel_cannot_take(tiny_causal_lm):
    with pytest.raises(ValueError):
        QuantizeParams(method="torchao-int4-weight-only", group_size=256)
    with pytest.raises(UnsupportedError, match="group sizes"):
        quantize_torchao(tiny_causal_lm.torch_model(), "int4-weight-only", include_head=False, group_size=16)
    with pytest.raises(ValueError, match="does not use group_size"):
        QuantizeParams(method="torchao-int8-dynamic", group_size=32)
    _, spec, plain = quantize_torchao(tiny_causal_lm.torch_model(), "int4-weight-only", include_head=False,
                                      group_size=128)          # divides the MLP's 128 inputs, not the 64 of the rest
    assert sorted(plain) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert len(spec["float_linears"]) == 2 * 6 and "lm_head" not in spec["float_linears"]


class _Planted:
    """A pickle that runs code when loaded: it creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_never_loaded(store, tiny_causal_lm, tmp_path):
    artifact = quantized(store, tiny_causal_lm, method="torchao-int8-weight-only")
    planted = tmp_path / "planted"
    shutil.copytree(artifact.path, planted)
    marker = tmp_path / "code-ran"
    torch.save({"state": _Planted(str(marker))}, planted / TORCHAO_WEIGHTS)
    with pytest.raises(UnreadableArtifactError, match="not a readable safetensors file"):
        ModelArtifact.load(planted).torch_model()
    with pytest.raises(UnreadableArtifactError):
        ModelArtifact.load(planted).model_format.parameter_counts(planted)
    # a pickle beside the safetensors (what torchao's own torch.save would write) is not read either
    shutil.copyfile(artifact.path / TORCHAO_WEIGHTS, planted / TORCHAO_WEIGHTS)
    torch.save({"state": _Planted(str(marker))}, planted / "pytorch_model.bin")
    ModelArtifact.load(planted).torch_model()
    assert not marker.exists()


@pytest.mark.parametrize("method,bound", [("bnb-int8", 0.015), ("bnb-nf4", 0.15)])    # measured 0.0057, 0.063
def test_bitsandbytes_methods_load_causal_lms(method, bound, store, tiny_causal_lm, batch, one_torch_thread):
    try:
        artifact = quantized(store, tiny_causal_lm, method=method)
    except UnsupportedError as exc:        # a bitsandbytes without kernels for this device
        pytest.skip(str(exc))
    model = artifact.torch_model()
    assert type(model.model.layers[0].mlp.up_proj).__module__.startswith("bitsandbytes")
    reference = logits(tiny_causal_lm, batch)
    error = (logits(artifact, batch) - reference).abs().max() / reference.abs().max()
    assert error < bound, f"{method}: relative logit error {error:.4f}"
    assert artifact.size_bytes() < tiny_causal_lm.size_bytes()


@pytest.mark.slow
@pytest.mark.long
def test_int8_weight_only_keeps_smollm2_perplexity(smollm2_folder, glue_data, tmp_path, one_torch_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compbench.tasks.language_modeling import glue_corpus, perplexity

    store = ArtifactStore(tmp_path)
    fp32 = store.build("smollm2", lambda f: save_hf_artifact(
        f, AutoModelForCausalLM.from_pretrained(smollm2_folder), AutoTokenizer.from_pretrained(smollm2_folder),
        task="lm", lineage=[]))
    int8 = quantized(store, fp32, method="torchao-int8-weight-only")
    texts = list(glue_corpus(glue_data, limit=20).documents)
    tokenizer = fp32.tokenizer()
    before = perplexity(fp32.torch_model(), tokenizer, texts, max_length=256, stride=256).perplexity
    after = perplexity(int8.torch_model(), tokenizer, texts, max_length=256, stride=256).perplexity
    assert after < 1.05 * before, f"int8 weight-only perplexity {after:.3f} vs fp32 {before:.3f}"
    assert int8.size_bytes() < 0.8 * fp32.size_bytes()
