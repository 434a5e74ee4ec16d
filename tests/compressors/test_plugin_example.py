"""The example plugin in examples/compbench-layerdrop, for real: built and installed by pip into a
temporary folder (never into the environment running the tests), found through its entry point
by ``compbench list``, and run through a suite on real SST-2 rows by ``compbench run``.

The suite's data and teacher recipe are test_end_to_end.py's, so with the session cache the
teacher is trained once for both.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "compbench-layerdrop"

SUITE = {
    "name": "plugin",
    "model": "minilm-l6",
    "tasks": ["sst2"],
    "data": {"limit_train": 800, "limit_eval": 200, "seed": 0},
    "teacher": {"epochs": 1, "max_steps": 60, "batch_size": 16, "learning_rate": 1e-4, "max_seq_len": 64, "seed": 42},
    "pipelines": [{"name": "baseline"},
                  {"name": "layerdrop-3", "steps": [{"compressor": "layerdrop", "params": {"keep": [0, 2, 4]}}]}],
    "backends": [{"name": "torch", "device": "cpu"}, {"name": "onnxruntime", "device": "cpu"}],
    "measure": {"batch_sizes": [1], "seq_lens": [32], "warmup_iters": 1, "min_iters": 3, "min_seconds": 0.2},
}


def test_params_take_exactly_one_of_keep_or_drop_top(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from pydantic import ValidationError

    from compbench_layerdrop import LayerDrop, LayerDropParams

    assert LayerDrop.name == "layerdrop" and LayerDrop.Params is LayerDropParams
    assert LayerDropParams(keep=[4, 0, 2]).keep == [0, 2, 4]          # layers run in their original order
    assert LayerDropParams(drop_top=2).drop_top == 2
    for params, message in [({}, "exactly one of keep .* or drop_top .*; got neither"),
                            ({"keep": [0, 2], "drop_top": 1}, "got both"),
                            ({"keep": [1, 1]}, "kept once"), ({"keep": [-1]}, "count from 0"),
                            ({"drop_top": 0}, "greater than or equal to 1"), ({"kep": [0]}, "Extra inputs")]:
        with pytest.raises(ValidationError, match=message):
            LayerDropParams.model_validate(params)


def test_layer_indices_are_checked_against_the_input_model(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from compbench.common.errors import UsageError
    from compbench_layerdrop import LayerDrop, LayerDropParams

    assert LayerDrop(LayerDropParams(drop_top=2)).kept_layers(6) == [0, 1, 2, 3]
    with pytest.raises(UsageError, match=r"\[6, 9\] out of range; the input model has 6 encoder layers"):
        LayerDrop(LayerDropParams(keep=[0, 6, 9])).kept_layers(6)
    with pytest.raises(UsageError, match="would drop every layer; the input model has 6 encoder layers"):
        LayerDrop(LayerDropParams(drop_top=6)).kept_layers(6)


def drop_layers(artifact, keep: list[int], work_dir: Path):
    """The compressor called in process, as compbench's pipeline calls it."""
    from compbench.compressors.base import CompressContext
    from compbench_layerdrop import LayerDrop, LayerDropParams

    ctx = CompressContext(data=None, teacher=artifact, seed=0, device="cpu", work_dir=work_dir, reporter=None)
    compressor = LayerDrop(LayerDropParams(keep=keep))
    compressor.check_input(artifact)
    return compressor.compress(artifact, ctx)


def test_kept_layers_compute_what_they_did_and_pruned_heads_follow_them(monkeypatch, tmp_path: Path, tiny_artifact):
    """On the tiny 2-layer BERT: keeping both layers changes nothing; keeping layer 1 of a model
    whose layer-1 heads were pruned reloads (from_pretrained re-prunes by config) to the same outputs."""
    import torch

    from compbench.models.artifact import save_hf_artifact

    monkeypatch.syspath_prepend(str(EXAMPLE))
    inputs = tiny_artifact.tokenizer()(["a fine film", "dull and far too long"], padding=True, return_tensors="pt")
    original = tiny_artifact.torch_model().eval()
    with torch.no_grad():
        expected = original(**inputs).logits
    same = drop_layers(tiny_artifact, [0, 1], tmp_path / "same")
    with torch.no_grad():
        assert torch.allclose(same.torch_model().eval()(**inputs).logits, expected, atol=1e-6)

    original.prune_heads({1: [0]})
    pruned = save_hf_artifact(tmp_path / "pruned", original, tiny_artifact.tokenizer(), task="sst2", lineage=[])
    top = drop_layers(pruned, [1], tmp_path / "top")
    reloaded = top.torch_model().eval()
    assert reloaded.config.num_hidden_layers == 1 and reloaded.config.pruned_heads == {0: [0]}
    assert top.lineage[0]["kept_layers"] == [1] and top.lineage[0]["params_after"] < top.lineage[0]["params_before"]
    original.bert.encoder.layer = torch.nn.ModuleList([original.bert.encoder.layer[1]])
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, original(**inputs).logits, atol=1e-6)


def test_other_architectures_are_unsupported(monkeypatch, tmp_path: Path, tiny_artifact):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from compbench.common.errors import UnsupportedError
    from compbench.models.artifact import save_hf_artifact

    monkeypatch.syspath_prepend(str(EXAMPLE))
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=2)
    distilbert = save_hf_artifact(tmp_path / "distilbert", DistilBertForSequenceClassification(config),
                                  tiny_artifact.tokenizer(), task="sst2", lineage=[])
    with pytest.raises(UnsupportedError, match="BERT-like encoders .*DistilBertForSequenceClassification"):
        drop_layers(distilbert, [0], tmp_path / "out")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package pip-installed (offline: no index, the environment's setuptools) into a
    target folder. Built from a copy, as pip's in-tree build leaves build/ and *.egg-info behind."""
    root = tmp_path_factory.mktemp("plugin")
    source, target = root / "src", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "compbench_layerdrop" / "__init__.py").is_file()
    return target


def compbench(args: list[str], site: Path, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ)       # carries the session's COMPBENCH_CACHE_DIR and HF_HUB_OFFLINE
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "compbench", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=timeout)


def test_list_shows_the_installed_plugin(installed: Path):
    done = compbench(["list"], installed, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next((line for line in done.stdout.splitlines() if line.split()[:1] == ["layerdrop"]), None)
    assert line is not None, done.stdout
    assert "plugin compbench_layerdrop:LayerDrop from compbench-layerdrop 0.1.0" in line


@pytest.fixture
def run_rows(installed: Path, tmp_path: Path, glue_data: Path, cache_root: Path) -> list[dict]:
    """Function-scoped, so that conftest's autouse environment (the session cache) is in place."""
    root = tmp_path
    suite_file = root / "plugin.yaml"
    suite_file.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    assert os.environ["COMPBENCH_CACHE_DIR"] == str(cache_root)    # the session cache: the teacher is shared
    done = compbench(["run", str(suite_file), "--data-dir", str(glue_data / "glue"), "--results-dir",
                      str(root / "results"), "--run-id", "plugin", "--no-progress"], installed, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    with open(root / "results" / "plugin" / "results.jsonl", encoding="utf-8") as rows:
        return [json.loads(line) for line in rows if line.strip()]


# long: about 2 min (a whole suite of the installed plugin on two backends)
@pytest.mark.long
def test_plugin_runs_through_a_suite_on_both_backends(run_rows: list[dict]):
    rows = {(row["pipeline"], row["backend"]): row for row in run_rows}
    assert set(rows) == {(p, b) for p in ("baseline", "layerdrop-3") for b in ("torch", "onnxruntime")}, sorted(rows)
    assert all(row["status"] == "ok" for row in run_rows), [(r["pipeline"], r["backend"], r["reason"])
                                                            for r in run_rows]
    for backend in ("torch", "onnxruntime"):
        baseline, dropped = rows[("baseline", backend)], rows[("layerdrop-3", backend)]
        assert isinstance(dropped["metric"], float) and math.isfinite(dropped["metric"])
        assert 0.0 <= dropped["metric"] <= 1.0 and dropped["metric_name"] == "accuracy"
        # 3 of 6 layers: the embeddings (about 12M of MiniLM's 22.7M) stay, each layer is about 1.8M
        assert baseline["params"] == pytest.approx(22.7e6, rel=0.01)
        assert baseline["params"] - dropped["params"] == pytest.approx(3 * 1.77e6, rel=0.02)
        assert dropped["size_bytes"] < 0.85 * baseline["size_bytes"]
        assert dropped["artifact_format"] == "hf"
        step = dropped["lineage"][-1]
        assert step["step"] == "layerdrop" and step["params"]["keep"] == [0, 2, 4]
        assert step["kept_layers"] == [0, 2, 4] and step["dropped_layers"] == [1, 3, 5]
        assert (step["layers_before"], step["layers_after"]) == (6, 3)
        assert step["params_before"] == baseline["params"] and step["params_after"] == dropped["params"]
    # one model, two runtimes: the ONNX export of the 3-layer model predicts what PyTorch does
    assert rows[("layerdrop-3", "onnxruntime")]["parity_max_abs_diff"] < 1e-3
    assert abs(rows[("layerdrop-3", "torch")]["metric"] - rows[("layerdrop-3", "onnxruntime")]["metric"]) <= 0.01
