"""The openvino backend on real models: the same logits as PyTorch, the precision that ran read back from the
compiled model (not the one asked for), native-only bf16/fp16, static shapes compiled outside timed calls, and a
causal LM with the cache in the graph decoding as PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compbench.backends.openvino import OpenVinoBackend, OpenVinoOptions, compile_config, precision_name
from compbench.common.plugins import BACKENDS
from compbench.config.backends import BackendOptions
from compbench.measurement.timing import cold_ms

openvino = pytest.importorskip("openvino", reason="openvino is not installed (scripts/setup.sh installs it)")

SENTENCES = ["a gripping, funny and humane film", "the plot is thin and the jokes fall flat",
             "it is neither good nor bad", "one of the best films of the year"]


def entry(**options) -> BackendOptions:
    precision = options.pop("precision", "fp32")
    return BackendOptions(name="openvino", threads=1, precision=precision, options=options)


def batch_of(artifact, length: int = 24) -> dict[str, np.ndarray]:
    encoded = artifact.tokenizer()(SENTENCES, padding="max_length", max_length=length, truncation=True,
                                   return_tensors="np")
    return {key: value.astype(np.int64) for key, value in encoded.items()}


def torch_logits(artifact, batch) -> np.ndarray:
    return BACKENDS.get("torch")().load(artifact, BackendOptions(name="torch", threads=1)).run(batch)


@pytest.mark.parametrize("shapes", ["dynamic", "static"])
def test_an_encoder_gives_pytorchs_logits(responsive, shapes):
    batch = batch_of(responsive)
    session = OpenVinoBackend().load(responsive, entry(shapes=shapes))
    assert np.abs(session.run(batch) - torch_logits(responsive, batch)).max() < 1e-4
    assert session.deployed_files[0].name == "openvino_model.xml"
    assert all(path.exists() for path in session.deployed_files)
    session.close()


def test_the_recorded_precision_is_what_the_compiled_model_reports(responsive):
    """Read back independently of the session: the compiled model's own INFERENCE_PRECISION_HINT."""
    for options in ({}, {"engine_precision": True}):
        session = OpenVinoBackend().load(responsive, entry(**options))
        compiled = session.shapes.any_compiled()
        reported = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        info = session.runtime_info()
        assert info["precision"] == info["float_precision"] == reported
        assert info["inference_num_threads"] == 1 and info["performance_hint"] == "LATENCY"
        # what the runner reads the roofline against is what ran
        assert OpenVinoBackend().compute_precision(entry(**options), "fp32") == reported
        session.close()
    # fp32 asked for is asked for explicitly: OpenVINO would otherwise pick bf16 on an AMX CPU
    assert compile_config(entry(), OpenVinoOptions())["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_PRECISION_HINT" not in compile_config(entry(engine_precision=True),
                                                            OpenVinoOptions(engine_precision=True))


def test_bf16_and_fp16_only_where_the_cpu_computes_them(monkeypatch):
    core = openvino.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for precision, capability in (("bf16", "BF16"), ("fp16", "FP16")):
        availability = OpenVinoBackend().availability(entry(precision=precision))
        assert availability.ok == (capability in capabilities)
        if not availability.ok:
            assert f"does not compute {precision} natively" in availability.reason
            assert "\n" not in availability.reason
    # on a CPU that has them (AMX): allowed
    monkeypatch.setattr("compbench.backends.openvino.core", lambda: FakeCore(capabilities + ["BF16", "FP16"]))
    assert OpenVinoBackend().availability(entry(precision="bf16")).ok
    assert not OpenVinoBackend().availability(entry(precision="bf16", engine_precision=True)).ok


class FakeCore:
    """openvino.Core as a CPU with other capabilities would answer (only what availability asks)."""

    available_devices = ["CPU"]

    def __init__(self, capabilities):
        self.capabilities = capabilities

    def get_property(self, device, name):
        return {"OPTIMIZATION_CAPABILITIES": self.capabilities, "FULL_DEVICE_NAME": "a CPU with AMX"}[name]


def test_what_cannot_run_is_a_reason_not_a_crash():
    assert "options.target" in OpenVinoBackend().availability(BackendOptions(name="openvino", device="cuda")).reason
    if "GPU" not in openvino.Core().available_devices:
        assert "sees no GPU" in OpenVinoBackend().availability(entry(target="gpu")).reason


def test_static_shapes_compile_each_shape_once_outside_the_timed_call(responsive):
    session = OpenVinoBackend().load(responsive, entry(shapes="static"))
    assert session.runtime_info()["compiled_shapes"] == 0
    short, long = batch_of(responsive, 16), batch_of(responsive, 32)
    cold_ms(session, short)            # the first call at a shape: prepare compiles, the timed call only runs
    cold_ms(session, long)
    session.run(short)
    info = session.runtime_info()
    assert info["compiled_shapes"] == 2 and info["compile_seconds"] > 0 and info["static_shapes"] is True
    session.close()


def test_a_causal_lm_scores_and_decodes_as_pytorch_does(tiny_causal_lm):
    tokenizer = tiny_causal_lm.tokenizer()
    encoded = tokenizer(["the cat sat on the", "a b c d e f"], return_tensors="np", padding=True)
    batch = {key: encoded[key].astype(np.int64) for key in ("input_ids", "attention_mask")}
    reference = BACKENDS.get("torch")().load(tiny_causal_lm, BackendOptions(name="torch", threads=1))
    session = OpenVinoBackend().load(tiny_causal_lm, entry())
    unpadded = {key: value[:, :6] for key, value in batch.items()}   # run(): the last position's logits, a real token
    assert np.abs(session.run(unpadded) - reference.run(unpadded)).max() < 1e-4
    inputs = {key: torch.from_numpy(value) for key, value in batch.items()}
    ours = session.language_model()(**inputs, use_cache=False).logits
    theirs = reference.language_model()(**inputs, use_cache=False).logits
    real = inputs["attention_mask"].bool()
    assert (ours - theirs).abs()[real].max() < 1e-4
    generated = session.language_model().generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, reference.language_model().generate(**inputs, max_new_tokens=6, do_sample=False))
    info = session.runtime_info()
    assert info["precision"] == "fp32" and info["kv_cache_precision"] == "fp32"   # fp32 asked: the cache too
    session.close()
