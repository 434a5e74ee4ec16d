"""llama.cpp: compbench's GGUF writer, quantize method ``gguf`` and the ``llamacpp`` backend.

Without llama-cpp-python: the writer is checked against an independent reader (transformers' GGUF loader, which
undoes the query/key row order on its own), and the refusals. With it (``scripts/setup.sh --with llamacpp``), on the
real SmolLM2-135M: llama.cpp makes the same tokens as the Hugging Face tokenizer, its F32 perplexity equals
PyTorch's, its Q8_0 perplexity and bits per byte are within 2% of PyTorch fp32's on the same text (the issue's check),
greedy generation follows PyTorch's and a batch decodes as its sequences alone do, an importance matrix changes what
the quantizer writes, and a q8_0 KV cache is counted at its bytes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UnsupportedError
from compbench.common.hashing import stable_hash
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.base import CompressContext
from compbench.compressors.quantize import Quantize, QuantizeParams
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.gguf import GGUF_FILE, gguf_tensor_types
from compbench.models.llama_cpp import llama_cpp_module
from compbench.tasks.data import TaskData
from compbench.tasks.glue import TaskSpec
from compbench.tasks.language_modeling import glue_corpus, perplexity

LM_TASK = TaskSpec("glue-text", ("text",), 0, ("perplexity",), ("validation",), kind="language_modeling")
needs_llama_cpp = pytest.mark.skipif(llama_cpp_module() is None, reason="llama-cpp-python is not installed "
                                     "(scripts/setup.sh --with llamacpp builds it)")


def built(store: ArtifactStore, model: ModelArtifact, data: TaskData | None = None, **params) -> ModelArtifact:
    """One quantize step built into a sealed store entry, as a pipeline does."""
    settings = QuantizeParams(method="gguf", **params)

    def build(folder):
        ctx = CompressContext(data=data, teacher=model, seed=0, device="cpu", work_dir=folder,
                              reporter=Reporter(enabled=False), max_seq_len=128)
        return Quantize(settings).compress(model, ctx)
    return store.build(stable_hash([model.hash, settings.model_dump()]), build)


def load(model: ModelArtifact, **options):
    return BACKENDS.get("llamacpp")().load(model, BackendOptions(name="llamacpp", threads=2, options=options))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def tiny_smollm(smollm2_folder, store) -> ModelArtifact:
    """A randomly initialised 2-layer Llama with SmolLM2's configuration shape and its real tokenizer."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(smollm2_folder)
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 128, 256
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 4, 2, 32
    model = LlamaForCausalLM(config).eval()
    for module in model.modules():       # norms away from one: a wrong norm mapping must show
        if hasattr(module, "variance_epsilon"):
            module.weight.data.uniform_(0.5, 1.5)
    return store.build("tiny-smollm", lambda folder: save_hf_artifact(
        folder, model, AutoTokenizer.from_pretrained(smollm2_folder), task="glue-text", lineage=[]))


@pytest.fixture(scope="module")
def smollm2(smollm2_folder, store) -> ModelArtifact:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return store.build("smollm2", lambda folder: save_hf_artifact(
        folder, AutoModelForCausalLM.from_pretrained(smollm2_folder), AutoTokenizer.from_pretrained(smollm2_folder),
        task="glue-text", lineage=[]))


@pytest.fixture(scope="module")
def texts(glue_data) -> list[str]:
    return list(glue_corpus(glue_data, split="validation", limit=20).documents)


def lm_data(glue_data) -> TaskData:
    train = glue_corpus(glue_data, split="train", limit=200)
    return TaskData(LM_TASK, pd.DataFrame({"text": list(train.documents)}), {},
                    source=train.source, fingerprint=train.fingerprint)


# ---------------------------------------------------------------- the writer, checked without llama.cpp


@pytest.mark.parametrize("gguf_type, bound", [("f32", 0.0), ("f16", 1e-3), ("bf16", 8e-3)])
def test_the_written_gguf_reads_back_in_transformers_as_the_model(gguf_type, bound, tiny_smollm, store):
    """transformers' own GGUF reader (which puts the query/key rows back in Hugging Face's order itself) reads the
    file as the model's state dict: every tensor within the type's rounding."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    artifact = built(store, tiny_smollm, gguf_type=gguf_type)
    assert artifact.format == "gguf" and artifact.precision == gguf_type
    assert artifact.parameter_counts() == tiny_smollm.parameter_counts()
    assert artifact.model_format.parameter_counts(artifact.path)[0] == tiny_smollm.parameter_counts()[0]
    types = gguf_tensor_types(artifact.path / GGUF_FILE)
    assert types[gguf_type.upper()] > 0.99 * tiny_smollm.parameter_counts()[0]
    assert artifact.lineage[0]["gguf"]["chain"].startswith("fp32 model ->")
    if gguf_type == "bf16":        # transformers 4.57 reads no BF16 GGUF tensors: the values through gguf's reader
        from gguf.quants import dequantize

        from compbench.models.formats.gguf import read_gguf

        read = {t.name: torch.from_numpy(dequantize(t.data, t.tensor_type).copy())
                for t in read_gguf(artifact.path / GGUF_FILE).tensors}
        expected = tiny_smollm.torch_model().state_dict()["model.layers.1.mlp.down_proj.weight"]
        error = (read["blk.1.ffn_down.weight"] - expected).abs().max() / expected.abs().max()
        assert error < bound
        return
    model = tiny_smollm.torch_model()
    read = load_gguf_checkpoint(str(artifact.path / GGUF_FILE), return_tensors=True, model_to_load=model)["tensors"]
    expected = {name: value for name, value in model.state_dict().items()
                if name != "lm_head.weight"}                       # tied: the token table is the output
    assert set(read) == set(expected)
    for name, value in expected.items():
        error = (torch.as_tensor(read[name]).float() - value).abs().max() / value.abs().max()
        assert error <= bound, f"{gguf_type} {name}: relative error {error:.2e}"


def test_gguf_params_say_what_is_wrong():
    with pytest.raises(ValueError, match="imatrix applies to q8_0"):
        QuantizeParams(method="gguf", gguf_type="f16", imatrix=True)
    with pytest.raises(ValueError, match="calibration_rows only with imatrix"):
        QuantizeParams(method="gguf", gguf_type="q4_k_m", calibration_rows=16)
    with pytest.raises(ValueError, match="does not use gguf_type"):
        QuantizeParams(method="ort-int4", gguf_type="q4_0")
    # other methods' keys are unchanged by the new fields
    assert "gguf_type" not in QuantizeParams(method="nncf-int4").model_dump()
    assert QuantizeParams(method="gguf", gguf_type="q4_0").model_dump()["gguf_type"] == "q4_0"


def test_without_llama_cpp_a_row_is_skipped_with_how_to_install(monkeypatch, tiny_smollm):
    import compbench.backends.llamacpp as llamacpp

    monkeypatch.setattr(llamacpp, "llama_cpp_module", lambda: None)
    availability = llamacpp.LlamaCppBackend().availability(BackendOptions(name="llamacpp"))
    assert not availability.ok and "scripts/setup.sh --with llamacpp" in availability.reason
    with pytest.raises(UnsupportedError, match="not installed"):
        llamacpp.LlamaCppBackend().load(tiny_smollm, BackendOptions(name="llamacpp"))


@needs_llama_cpp
def test_llama_cpp_refuses_what_it_cannot_run(tiny_smollm, tiny_artifact):
    backend = BACKENDS.get("llamacpp")()
    assert "keep precision fp32" in backend.availability(BackendOptions(name="llamacpp", precision="bf16")).reason
    off = BackendOptions(name="llamacpp", options={"type_v": "q8_0", "flash_attention": "off"})
    assert "needs flash attention" in backend.availability(off).reason
    with pytest.raises(UnsupportedError, match="causal LMs"):
        backend.load(tiny_artifact, BackendOptions(name="llamacpp"))


# ---------------------------------------------------------------- llama.cpp on the real SmolLM2


@needs_llama_cpp
def test_llama_cpp_tokenizes_and_scores_smollm2_as_pytorch_does(smollm2, store, texts, one_torch_thread):
    """F32: the same tokens and offsets as the Hugging Face tokenizer, the same perplexity; Q8_0: perplexity and bits
    per byte within 2% of PyTorch fp32 on the same text."""
    tokenizer = smollm2.tokenizer()
    reference = perplexity(smollm2.torch_model().eval(), tokenizer, texts, max_length=256, stride=256)
    scores = {}
    for name, model in (("f32", smollm2), ("q8_0", built(store, smollm2, gguf_type="q8_0"))):
        session = load(model)
        try:
            own = session.text_tokenizer()
            for text in texts[:5]:
                mine, theirs = own(text, return_offsets_mapping=True), tokenizer(text, return_offsets_mapping=True)
                assert mine.input_ids == theirs.input_ids
                assert mine["offset_mapping"] == [tuple(span) for span in theirs["offset_mapping"]]
            scores[name] = perplexity(session.language_model(), own, texts, max_length=256, stride=256)
        finally:
            session.close()
    print({name: (s.perplexity, s.bits_per_byte) for name, s in scores.items()}, reference.perplexity)
    assert scores["f32"].perplexity == pytest.approx(reference.perplexity, rel=2e-3)
    assert scores["q8_0"].perplexity == pytest.approx(reference.perplexity, rel=0.02)
    assert scores["q8_0"].bits_per_byte == pytest.approx(reference.bits_per_byte, rel=0.02)
    assert scores["q8_0"].n_tokens == reference.n_tokens


@needs_llama_cpp
def test_llama_cpp_generates_greedily_as_pytorch_and_batches_exactly(smollm2, texts, one_torch_thread):
    tokenizer = smollm2.tokenizer()
    ids = [tokenizer(text, add_special_tokens=False).input_ids[:24] for text in texts[:2]]
    prompts = torch.tensor(ids)
    with torch.no_grad():
        expected = smollm2.torch_model().eval().generate(prompts[:1], max_new_tokens=12, min_new_tokens=12,
                                                         do_sample=False, pad_token_id=tokenizer.eos_token_id)
    session = load(smollm2)
    try:
        model = session.language_model()
        alone = [model.generate(prompts[i:i + 1], max_new_tokens=12) for i in range(2)]
        together = model.generate(prompts, max_new_tokens=12)
        logits = session.run({"input_ids": prompts.numpy(), "attention_mask": np.ones_like(prompts.numpy())})
    finally:
        session.close()
    assert torch.equal(alone[0], expected)
    assert torch.equal(together, torch.cat(alone))
    assert logits.shape == (2, 49152) and np.all(np.isfinite(logits))


@pytest.mark.long
@needs_llama_cpp
def test_an_importance_matrix_changes_what_the_quantizer_writes(smollm2, store, glue_data):
    plain = built(store, smollm2, gguf_type="q4_0")
    weighted = built(store, smollm2, data=lm_data(glue_data), gguf_type="q4_0", imatrix=True, calibration_rows=16)
    record = weighted.lineage[0]["gguf"]
    assert record["imatrix"]["chunks"] == 16 and record["imatrix"]["tensors"] == 30 * 7 + 1
    assert "importance matrix" in record["chain"]
    assert sum(gguf_tensor_types(weighted.path / GGUF_FILE).values()) == sum(
        gguf_tensor_types(plain.path / GGUF_FILE).values())
    assert (plain.path / GGUF_FILE).read_bytes() != (weighted.path / GGUF_FILE).read_bytes()


@pytest.mark.long
@needs_llama_cpp
def test_a_quantized_kv_cache_is_counted_at_its_bytes_and_keeps_perplexity(smollm2, texts):
    scores, reads = {}, {}
    for kv in ("f16", "q8_0"):
        session = load(smollm2, type_k=kv, type_v=kv)
        try:
            scores[kv] = perplexity(session.language_model(), session.text_tokenizer(), texts[:8],
                                    max_length=256).perplexity
            reads[kv] = session.step_reads()
            assert session.runtime_info()["kv_cache_types"] == {"k": kv, "v": kv}
        finally:
            session.close()
    assert reads["f16"].kv_bytes_per_value == 2 and reads["q8_0"].kv_bytes_per_value == 34 / 32
    assert reads["q8_0"].weight_bytes == reads["f16"].weight_bytes
    assert scores["q8_0"] == pytest.approx(scores["f16"], rel=0.01)
