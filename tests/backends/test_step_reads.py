"""The bytes a decoding step reads (``Session.step_reads``, the bandwidth roof's denominator), each backend against
an independent count: the tensors' own dtypes and shapes of the model as loaded, its architecture for an int4
graph, the cache a real ``generate`` keeps. Tiny random Llamas for every path; the real SmolLM2-135M for the
figures the roof was wrong by when it divided by the deployed files (a 2:4 model stored sparse but run dense,
bf16 weights cast from fp32 files, an int4 graph that keeps its fp32 embedding table)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from compbench.backends.torch import AutocastModel, TorchSession
from compbench.common.plugins import BACKENDS
from compbench.config.backends import BackendOptions
from compbench.models.artifact import ModelArtifact, files_size

HIDDEN, VOCAB = 64, 1000
CPU = torch.device("cpu")


def llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


def held_bytes(model: torch.nn.Module) -> int:
    """Every tensor the model holds at its own dtype, a tied one once (``parameters()`` yields it once)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def session(model: torch.nn.Module, autocast: torch.dtype | None = None) -> TorchSession:
    """A torch session over a loaded module (the backend's precision checks are not what is tested here: this CPU
    may not compute bf16 natively, which the backend refuses)."""
    return TorchSession(model, CPU, torch.get_num_threads(), [], autocast=autocast)


def generated_cache(model, tokens: int = 3):
    """The KV cache a real greedy ``generate`` kept: (dtype names, bytes per value)."""
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                             min_new_tokens=tokens, do_sample=False, return_dict_in_generate=True, pad_token_id=0)
    tensors = [t for layer in out.past_key_values for t in layer]
    values = sum(t.numel() for t in tensors)
    return {t.dtype for t in tensors}, sum(t.numel() * t.element_size() for t in tensors) / values


def loaded_reads(backend: str, artifact, options):
    """``step_reads()`` of ``artifact`` loaded on ``backend``, the session's deployed bytes and its runtime info, the
    session closed after."""
    loaded = BACKENDS.get(backend)().load(artifact, options)
    try:
        return loaded.step_reads(), files_size(loaded.deployed_files), loaded.runtime_info()
    finally:
        loaded.close()


def test_a_tied_table_is_read_whole_and_an_untied_one_a_row_per_sequence():
    tied, untied = llama(tied=True), llama(tied=False)
    reads = session(tied).step_reads()
    assert (reads.weight_bytes, reads.row_bytes) == (held_bytes(tied), 0)        # the head reads the whole table
    reads = session(untied).step_reads()
    table = untied.model.embed_tokens.weight
    assert reads.weight_bytes == held_bytes(untied) - VOCAB * HIDDEN * 4          # the lookup table is not read whole
    assert reads.row_bytes == HIDDEN * 4 == table[0].numel() * table.element_size()
    assert (reads.kv_dtype, reads.kv_bytes_per_value) == ("fp32", 4.0)
    assert ({torch.float32}, 4.0) == generated_cache(untied)


@pytest.mark.parametrize("dtype, name", [(torch.bfloat16, "bf16"), (torch.float16, "fp16")])
def test_cast_weights_and_their_cache_count_at_the_dtype_they_run_in(dtype, name):
    model = llama(tied=False).to(dtype)
    reads = session(model).step_reads()
    assert reads.weight_bytes == held_bytes(model) - VOCAB * HIDDEN * 2
    assert reads.weight_bytes < 0.51 * held_bytes(llama(tied=False))             # half the fp32 files' bytes
    assert reads.row_bytes == HIDDEN * 2
    assert (reads.kv_dtype, reads.kv_bytes_per_value) == (name, 2.0)
    assert ({dtype}, 2.0) == generated_cache(model)


def test_autocast_reads_its_cached_copies_of_the_linears_and_the_cache_it_keeps():
    model = llama(tied=False)
    reads = session(model, autocast=torch.bfloat16).step_reads()
    linears = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())
    assert reads.weight_bytes == 2 * linears + held_bytes(model) - 4 * linears - VOCAB * HIDDEN * 4
    assert reads.row_bytes == HIDDEN * 4                                          # the embedding is not autocast
    dtypes, per_value = generated_cache(AutocastModel(model, "cpu", torch.bfloat16))
    assert reads.kv_bytes_per_value == per_value
    assert reads.kv_dtype == "+".join(sorted({"fp32" if d == torch.float32 else "bf16" for d in dtypes}))


def test_a_dynamic_int8_head_leaves_the_table_only_looked_up():
    """Every Linear quantized (the tied head too, into its own int8 copy): the int8 weights at a byte each, the
    fp32 table one row per sequence."""
    model = llama(tied=True)
    fp32 = held_bytes(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    reads = session(quantized).step_reads()
    assert reads.row_bytes == HIDDEN * 4
    # fp32 minus the table and every Linear weight, plus each weight at one byte
    assert reads.weight_bytes == fp32 - VOCAB * HIDDEN * 4 - 4 * (weights - VOCAB * HIDDEN) + weights


def int4_graph_bytes(model: torch.nn.Module, block: int = 32) -> int:
    """A MatMulNBits graph's weights from the architecture: each Linear (the tied head too) as 4-bit values with
    one fp32 scale per ``block`` inputs (symmetric: no zero points), every other parameter fp32 except the table."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = sum(m.out_features * -(-m.in_features // block) * (block // 2 + 4) for m in linears)
    others = sum(p.numel() * 4 for name, p in model.named_parameters() if "norm" in name)
    return quantized + others


def test_onnx_runtime_counts_the_graph_it_runs(tiny_causal_lm, tmp_path, one_torch_thread):
    """fp32: every weight whole, the tied table once (the head reads it through a Transpose); int4: the Linears as
    MatMulNBits, the table (fp32, only gathered) one row per sequence; the cache at the graph's input dtype."""
    from compbench.common.progress import Reporter
    from compbench.compressors.base import CompressContext
    from compbench.compressors.quantize import METHODS, QuantizeParams

    options = BackendOptions(name="onnxruntime", threads=1)
    model = tiny_causal_lm.torch_model()
    hidden = model.config.hidden_size
    reads, _, _ = loaded_reads("onnxruntime", tiny_causal_lm, options)
    assert reads.weight_bytes == pytest.approx(held_bytes(model), rel=1e-3) and reads.row_bytes == 0
    assert (reads.kv_dtype, reads.kv_bytes_per_value) == ("fp32", 4.0)
    folder = tmp_path / "int4"
    folder.mkdir()
    ctx = CompressContext(data=None, teacher=tiny_causal_lm, seed=0, device="cpu", work_dir=folder,
                          reporter=Reporter(enabled=False))
    int4 = METHODS["ort-int4"](tiny_causal_lm, QuantizeParams(method="ort-int4"), ctx)
    reads, size, _ = loaded_reads("onnxruntime", int4, options)
    assert reads.row_bytes == hidden * 4
    assert reads.weight_bytes == pytest.approx(int4_graph_bytes(model), rel=1e-3)
    assert size > 1.5 * (reads.weight_bytes + reads.row_bytes)     # the files hold the fp32 table whole


def test_openvino_counts_its_ir_at_the_precisions_read_back(tiny_causal_lm):
    pytest.importorskip("openvino", reason="openvino is not installed (scripts/setup.sh installs it)")
    model = tiny_causal_lm.torch_model()
    reads, _, info = loaded_reads("openvino", tiny_causal_lm, BackendOptions(name="openvino", threads=1))
    assert info["kv_cache_precision"] == info["float_precision"] == "fp32" == reads.kv_dtype
    assert reads.kv_bytes_per_value == 4.0 and reads.row_bytes == 0
    # the converter folds a random model's norm weights of ones away (a few hundred bytes of 4 MB)
    assert reads.weight_bytes == pytest.approx(held_bytes(model), rel=1e-3)
    # a u8 KV cache asked for: read back, counted at a byte a value, the weights as before
    quantized, _, info = loaded_reads("openvino", tiny_causal_lm, BackendOptions(
        name="openvino", threads=1, options={"kv_cache_precision": "u8"}))
    assert info["kv_cache_precision"] == "u8" == quantized.kv_dtype and quantized.kv_bytes_per_value == 1
    assert quantized.weight_bytes == reads.weight_bytes


# ---- the real model ----------------------------------------------------------------------------------------------

def linked(folder: Path, where: Path, **meta) -> ModelArtifact:
    """An ``hf`` artifact of a save_pretrained folder, its files linked into ``where`` (exports are written beside
    them, not into the sealed conversion)."""
    where.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            (where / path.name).symlink_to(path)
    return ModelArtifact(path=where, task="glue-text", num_labels=2, format="hf", hash="", kind="causal-lm", **meta)


def two_four(source: ModelArtifact, folder: Path) -> ModelArtifact:
    """SmolLM2 with 2 of every 4 inputs of each decoder Linear zeroed (by magnitude), stored ``hf-sparse``."""
    from compbench.compressors.prune import PruneParams, two_four_mask
    from compbench.models.formats.sparse import save_sparse_state
    from compbench.models.surgery import selected_linears, untied_state

    module = source.torch_model()
    targets = selected_linears(module, PruneParams(method="two-four").modules)
    with torch.no_grad():
        for linear in targets.values():
            linear.weight.mul_(two_four_mask(linear.weight.abs()))
    folder.mkdir()
    module.config.save_pretrained(folder)
    source.tokenizer().save_pretrained(folder)
    save_sparse_state(folder, untied_state(module), [f"{name}.weight" for name in targets])
    return ModelArtifact(path=folder, task="glue-text", num_labels=2, format="hf-sparse", hash="", kind="causal-lm")


# long: about 65 s (real SmolLM2 three ways); the tiny models' counts stay in the default run
@pytest.mark.long
def test_smollm2_on_torch_fp32_bf16_and_two_four(smollm2_folder, tmp_path, one_torch_thread):
    """SmolLM2-135M (tied, 30 layers x 3 KV heads x 64): fp32 reads its 538 MB; bf16 weights half of it, though
    the files hold fp32; 2:4 runs dense, so it reads the 538 MB its 339 MB of files (bitmask + values) expand to."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    fp32 = held_bytes(reference)
    options = BackendOptions(name="torch", threads=1)
    artifact = linked(smollm2_folder, tmp_path / "smollm2")
    reads, _, _ = loaded_reads("torch", artifact, options)
    assert (reads.weight_bytes, reads.row_bytes, reads.kv_bytes_per_value) == (fp32, 0, 4.0)
    assert 537e6 < fp32 < 539e6

    half = reference.to(torch.bfloat16)
    reads = session(half).step_reads()
    assert (reads.weight_bytes, reads.row_bytes) == (held_bytes(half), 0)
    assert (reads.kv_dtype, reads.kv_bytes_per_value) == ("bf16", 2.0)
    assert files_size(artifact.deployed_files()) > 1.99 * reads.weight_bytes       # what the roof used to divide by

    sparse = two_four(artifact, tmp_path / "two-four")
    reads, stored, _ = loaded_reads("torch", sparse, options)
    assert (reads.weight_bytes, reads.row_bytes) == (fp32, 0)
    assert 1.55 < fp32 / stored < 1.65


@pytest.mark.slow
@pytest.mark.long
def test_smollm2_as_an_onnx_runtime_int4_graph(smollm2_folder, tmp_path, one_torch_thread):
    """ort-int4 SmolLM2 (about 80 s here: export and quantize): 84 MB of 4-bit Linears (the head too) and fp32
    norms, one 2,304-byte row of the fp32 table per sequence; its files hold 199 MB (the table whole)."""
    from transformers import AutoModelForCausalLM

    from compbench.common.progress import Reporter
    from compbench.compressors.base import CompressContext
    from compbench.compressors.quantize import METHODS, QuantizeParams

    reference = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    artifact = linked(smollm2_folder, tmp_path / "smollm2")
    folder = tmp_path / "int4"
    folder.mkdir()
    ctx = CompressContext(data=None, teacher=artifact, seed=0, device="cpu", work_dir=folder,
                          reporter=Reporter(enabled=False))
    int4 = METHODS["ort-int4"](artifact, QuantizeParams(method="ort-int4"), ctx)
    loaded = BACKENDS.get("onnxruntime")().load(int4, BackendOptions(name="onnxruntime", threads=1))
    try:
        reads = loaded.step_reads()
        stored = files_size(loaded.deployed_files)
    finally:
        loaded.close()
    assert reads.row_bytes == 576 * 4
    assert reads.weight_bytes == pytest.approx(int4_graph_bytes(reference), rel=1e-3)
    assert 2.2 < stored / (reads.weight_bytes + reads.row_bytes) < 2.45
