"""Parameter counts of quantized models (design.md, "Size"): a quantized model has the parameters of its source, and
its non-zero parameters are real zeros only: a weight that quantizes to 0 is not pruned, a weight that was 0 before
quantization is. Each format counts its stored weights' logical elements (a packed 4-bit pair as two, scales and zero
points as none, a tied table once), checked against the source's own count (the sum of ``numel`` over the fp32
module's parameters) on the real SmolLM2-135M and MiniLM; the zeros on a tiny BERT with pruned rows.

Measured here before the fix, SmolLM2 (134,515,008 parameters): torch dynamic INT8 162,826,560, bitsandbytes NF4
83,109,768, ONNX Runtime int4 99,790,006; torchao int8 weight-only 134,515,008 with 132,932,078 non-zero of the
source's 134,189,880.
"""

from __future__ import annotations

import pytest
import torch

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import Quantize, QuantizeParams
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats import FORMATS

# ort-int4 exports SmolLM2 to ONNX first (90 s here): long; the tied head's count is checked on a tiny Llama
SMOLLM2_METHODS = ["dynamic", "bnb-nf4", pytest.param("ort-int4", marks=pytest.mark.long), "torchao-int8-weight-only"]
ENCODER_METHODS = ["dynamic", "ort-dynamic", "ort-int4", "torchao-int8-weight-only"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")     # see tests/conftest.py


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("parameter-counts"))


def quantized(store: ArtifactStore, model: ModelArtifact, method: str) -> ModelArtifact:
    def build(folder):
        ctx = CompressContext(data=None, teacher=model, seed=0, device="cpu", work_dir=folder,
                              reporter=Reporter(enabled=False))
        return Quantize(QuantizeParams(method=method)).compress(model, ctx)

    try:
        return store.build(f"{model.hash}-{method}", build)
    except UnsupportedError as exc:      # bitsandbytes without kernels for this CPU
        pytest.skip(f"{method}: {exc}")


def module_counts(artifact: ModelArtifact) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the fp32 module, as PyTorch counts them (a tied table once)."""
    parameters = list(artifact.torch_model().parameters())
    return sum(p.numel() for p in parameters), sum(int(p.count_nonzero()) for p in parameters)


def saved(store: ArtifactStore, name: str, model, tokenizer, task: str) -> ModelArtifact:
    return store.build(name, lambda folder: save_hf_artifact(folder, model, tokenizer, task=task, lineage=[]))


@pytest.fixture(scope="module")
def smollm2(smollm2_folder, store) -> tuple[ModelArtifact, tuple[int, int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    artifact = saved(store, "smollm2", AutoModelForCausalLM.from_pretrained(smollm2_folder),
                     AutoTokenizer.from_pretrained(smollm2_folder), "glue-text")
    return artifact, module_counts(artifact)


@pytest.fixture(scope="module")
def minilm(minilm_path, store) -> tuple[ModelArtifact, tuple[int, int]]:
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)     # the classifier head is new
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    artifact = saved(store, "minilm", model, AutoTokenizer.from_pretrained(minilm_path), "sst2")
    return artifact, module_counts(artifact)


def check_keeps_source_counts(artifact: ModelArtifact, source_counts: tuple[int, int]) -> None:
    params, nonzero = source_counts
    assert FORMATS[artifact.format].parameter_counts(artifact.path)[0] == params, "the format's own count"
    assert artifact.parameter_counts() == (params, nonzero), "what rows report"


@pytest.mark.parametrize("method", SMOLLM2_METHODS)
def test_a_quantized_smollm2_has_its_sources_parameters(method, smollm2, store):
    source, counts = smollm2
    assert counts[0] == 134_515_008
    check_keeps_source_counts(quantized(store, source, method), counts)


@pytest.mark.parametrize("method", ENCODER_METHODS)
def test_a_quantized_minilm_has_its_sources_parameters(method, minilm, store):
    source, counts = minilm
    assert counts[0] == 22_713_986
    check_keeps_source_counts(quantized(store, source, method), counts)


@pytest.fixture(scope="module")
def tied_lm(tiny_causal_lm, store) -> tuple[ModelArtifact, tuple[int, int]]:
    """The tiny random Llama (its lm_head tied to its embedding table), every weight made distinct (``noisy``)."""
    artifact = saved(store, "tied-lm", noisy(tiny_causal_lm.torch_model()), tiny_causal_lm.tokenizer(), "glue-text")
    return artifact, module_counts(artifact)


@pytest.mark.parametrize("method", ["ort-dynamic", "ort-int4"])
def test_a_tied_head_counts_once_in_onnx(method, tied_lm, store):
    """onnxruntime's pre-processing stores the head as the table's folded transpose: one parameter, stored twice."""
    source, counts = tied_lm
    model = source.torch_model()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    check_keeps_source_counts(quantized(store, source, method), counts)


def noisy(model):
    """``model`` with noise on every weight: a fresh model's zero biases and unit norm weights are alike, and the
    ONNX exporter stores alike tensors once."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def pruned(tiny_artifact, store) -> tuple[ModelArtifact, tuple[int, int]]:
    """The tiny random BERT (``noisy``) with half the rows of each layer's query weight set to 0 (pruned)."""
    model = noisy(tiny_artifact.torch_model())
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight[::2] = 0
    artifact = saved(store, "pruned", model, tiny_artifact.tokenizer(), "sst2")
    return artifact, module_counts(artifact)


@pytest.mark.parametrize("method", ENCODER_METHODS)
def test_only_real_zeros_count_as_pruned(method, pruned, store):
    """Rows report the pruned model's non-zero count after quantization. The stored integers cannot tell: small
    weights that round to 0 join the pruned ones there (which is why a quantized model keeps its source's count)."""
    source, (params, nonzero) = pruned
    assert nonzero <= params - 2 * 16 * 32           # the pruned rows
    artifact = quantized(store, source, method)
    assert artifact.parameter_counts() == (params, nonzero)
    stored, stored_nonzero = FORMATS[artifact.format].parameter_counts(artifact.path)
    assert stored == params and stored_nonzero < nonzero
