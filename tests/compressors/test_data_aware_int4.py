"""Data-aware 4-bit weight quantization against round-to-nearest on the real SmolLM2-135M (issue 26).

At the same bits, group size and ratio (int4_asym, groups of 64, every decoder Linear in 4 bits), ``nncf-int4`` with
NNCF's scale estimation, calibrated on 32 seeded 128-token chunks of the GLUE training text, must give SmolLM2 a
lower perplexity than the data-free round-to-nearest build, on the evaluation corpus of suites/llm.yaml (80 RTE +
MRPC validation documents, windows of 512 tokens), with the paired 95% bootstrap interval over documents that the
reports read (``results.analysis.paired_delta``) below zero. Both are built by the quantize compressor through a
pipeline build and scored through the openvino backend's session as a cell scores them
(``measurement.language.language_quality``).

Measured here (NNCF 3.4, OpenVINO 2026.4, AVX2 CPU; fp32 IR 53.65): round-to-nearest 66.04, scale estimation 59.96,
a perplexity ratio of 0.908 [0.892, 0.925] and a delta of -6.07 [-7.80, -4.77]. The reference weights are SmolLM2's
Q4_1 GGUF de-quantized, yet 4-bit re-quantization is not lossless (round-to-nearest is 23% above fp32), so the
data-aware build has room to win, and it does. Not every data-aware method does: AWQ alone was worse than
round-to-nearest (67.54) and GPTQ only slightly better (64.17, in 14 minutes of build).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from compbench.cache.store import ArtifactStore
from compbench.common.plugins import BACKENDS
from compbench.common.progress import Reporter
from compbench.compressors.chain import PipelineBuild
from compbench.config.backends import BackendOptions
from compbench.config.measure import MeasureConfig
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.measurement.language import language_quality, lm_tokenizer
from compbench.models.artifact import ModelArtifact, save_hf_artifact
from compbench.models.formats.openvino import OPENVINO_XML, read_ir, weight_precisions
from compbench.results.analysis import paired_delta
from compbench.tasks.causal_lm import LanguageModelingConfig, load_language_modeling_data
from compbench.tasks.sources import detect_layout

pytest.importorskip("openvino", reason="openvino is not installed (scripts/setup.sh installs it)")
pytest.importorskip("nncf", reason="nncf is not installed (scripts/setup.sh installs it)")

# suites/llm.yaml's task and data: the RTE + MRPC validation documents, a seeded 80 of them, windows of 512 tokens
TASK = LanguageModelingConfig(name="glue-text", corpus="glue", window=512)
LIMIT_EVAL, LIMIT_TRAIN, SEED = 80, 2000, 0
ROUND_TO_NEAREST = {"method": "nncf-int4", "mode": "int4_asym", "group_size": 64, "ratio": 1.0}
SCALE_ESTIMATION = {**ROUND_TO_NEAREST, "scale_estimation": True, "calibration_rows": 32}


@pytest.fixture(scope="module")
def smollm2_build(smollm2_folder, glue_data, tmp_path_factory) -> PipelineBuild:
    """SmolLM2-135M as an fp32 ``hf`` artifact, with the suite's glue-text data, in a pipeline build (calibration
    chunks of 128 tokens: the suite's teacher max_seq_len)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = ArtifactStore(tmp_path_factory.mktemp("data-aware-int4"))
    source = store.build("smollm2", lambda folder: save_hf_artifact(
        folder, AutoModelForCausalLM.from_pretrained(smollm2_folder), AutoTokenizer.from_pretrained(smollm2_folder),
        task=TASK.name, lineage=[]))
    data = load_language_modeling_data(TASK, detect_layout(glue_data / "glue"), glue_data, limit_train=LIMIT_TRAIN,
                                       limit_eval=LIMIT_EVAL, seed=SEED)
    return PipelineBuild(source, data, store, seed=SEED, device="cpu", reporter=Reporter(enabled=False))


def quantized(build: PipelineBuild, name: str, params: dict) -> ModelArtifact:
    return build.run(PipelineConfig(name=name, steps=[StepConfig(compressor="quantize", params=params)]))


def quality_row(build: PipelineBuild, artifact: ModelArtifact) -> dict:
    """The quality fields of the artifact's row, scored through the openvino backend's session as a cell does."""
    session = BACKENDS.get("openvino")().load(artifact, BackendOptions(name="openvino", threads=2))
    try:
        return language_quality(session, lm_tokenizer(artifact), build.data, TASK, MeasureConfig(), SEED)
    finally:
        session.close()


@pytest.mark.long
def test_scale_estimation_beats_round_to_nearest_on_smollm2(smollm2_build):
    rtn = quantized(smollm2_build, "nncf-int4", ROUND_TO_NEAREST)
    aware = quantized(smollm2_build, "nncf-int4-se", SCALE_ESTIMATION)
    # the same bits in the same places: only the data-aware build read (training) text
    stored = weight_precisions(read_ir(rtn.path / OPENVINO_XML))
    assert weight_precisions(read_ir(aware.path / OPENVINO_XML)) == stored and stored["int4"] > 0
    assert "calibration" not in rtn.lineage[-1]
    assert aware.lineage[-1]["calibration"]["split"] == "train" and aware.lineage[-1]["calibration"]["chunks"] == 32

    rows = {name: quality_row(smollm2_build, artifact) for name, artifact in (("rtn", rtn), ("aware", aware))}
    assert rows["rtn"]["labels"] == rows["aware"]["labels"]         # the same documents, scored in the same tokens
    assert rows["rtn"]["eval_rows"] == LIMIT_EVAL
    delta = paired_delta(rows["aware"], rows["rtn"])                 # aware - rtn, as the reports read it
    perplexity = {name: row["metric"] for name, row in rows.items()}
    counts = np.asarray(rows["rtn"]["labels"], dtype=np.float64)
    per_document = np.asarray(rows["aware"]["predictions"]) / counts - np.asarray(rows["rtn"]["predictions"]) / counts
    print(json.dumps({**perplexity, "ratio": perplexity["aware"] / perplexity["rtn"],
                      "delta": [delta.value, delta.low, delta.high],
                      "documents_better": float(np.mean(per_document < 0))}))
    # measured: 66.04 (rtn) -> 59.96 (scale estimation), delta -6.07 [-7.80, -4.77]
    assert delta.value < 0 and delta.high < 0, (perplexity, delta)
    assert perplexity["aware"] < 0.97 * perplexity["rtn"], perplexity
