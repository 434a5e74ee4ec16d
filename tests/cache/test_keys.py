"""Every cache key covers everything the output depends on (design.md): a build step's key the suite's
seed, the libraries' versions and the content of a model folder a parameter names; a measured cell's key the
measuring code; an ONNX export the exporters' versions; a teacher the training libraries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compbench.common import envinfo
from compbench.compressors.chain import StepInputs, planned_hash, step_identity
from compbench.config.schema import PipelineConfig, StepConfig
from compbench.measurement import cell as cell_module
from compbench.models.formats.base import onnx_export_dir

STEP = StepConfig(compressor="prune", params={"method": "heads", "amount": 0.25})   # importance rows follow the seed


def key(step: StepConfig = STEP, seed: int = 0, base_dir: Path = Path(".")) -> str:
    return step_identity("input-hash", step, StepInputs("rows", seed, base_dir))[0]


def newer(monkeypatch, package: str, version: str = "99.0") -> None:
    """As if ``package`` had been upgraded to ``version``."""
    real = envinfo._version
    envinfo._version.cache_clear()
    monkeypatch.setattr(envinfo, "_version", lambda name: version if name == package else real(name))


def test_a_build_step_depends_on_the_suite_seed():
    assert key(seed=0) == key(seed=0) != key(seed=1)


@pytest.mark.parametrize("package", ["onnxruntime", "optimum", "transformers", "torch"])
def test_a_build_step_depends_on_the_libraries_that_build_it(monkeypatch, package):
    before = key()
    newer(monkeypatch, package)
    assert key() != before


def test_a_student_folder_is_keyed_by_its_content_not_its_name(tmp_path: Path, minilm_path: Path):
    """A local ``student: {model: ./dir}`` resolves against the suite's folder, and its weights are in the key."""
    suite_dir = tmp_path / "suite"
    shutil.copytree(minilm_path, suite_dir / "student", ignore=shutil.ignore_patterns("onnx*", "*.onnx"))
    step = StepConfig(compressor="distill", params={"student": {"model": "./student"}, "alpha": 0.5})
    before = key(step, base_dir=suite_dir)
    assert key(step, base_dir=suite_dir) == before
    weights = next((suite_dir / "student").glob("*.safetensors"))
    with open(weights, "r+b") as handle:       # the same name, other weights
        handle.seek(-8, 2)
        handle.write(b"\x00" * 8)
    assert key(step, base_dir=suite_dir) != before


def test_the_planned_hash_follows_the_same_key():
    pipeline = PipelineConfig(name="p", steps=[STEP])
    assert planned_hash("t", pipeline, StepInputs("rows", 0, Path("."))) != planned_hash(
        "t", pipeline, StepInputs("rows", 1, Path(".")))


def test_a_measured_cell_depends_on_the_measuring_code(tmp_path: Path, monkeypatch):
    """The package version never changes between commits: the key hashes the measuring code itself."""
    from compbench.config.loading import validate_suite

    suite = validate_suite({"name": "k", "tasks": ["sst2"]}, "k.yaml")
    cell = cell_module.Cell("sst2", suite.pipelines[0], suite.backends[0])
    before = cell_module.cell_key(suite, cell, "a", "rows", "teacher")
    assert cell_module.cell_key(suite, cell, "a", "rows", "teacher") == before
    assert cell_module.cell_key(suite, cell, "a", "rows", "another teacher") != before      # timed against it
    copy = tmp_path / "compbench"
    shutil.copytree(cell_module.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fingerprint = cell_module.code_fingerprint.__wrapped__      # not the per-process cache: the files change here
    assert fingerprint(copy) == cell_module.code_fingerprint()
    timing = copy / "measurement" / "timing.py"
    timing.write_text(timing.read_text() + "\n# a change to how latency is measured\n")
    changed = fingerprint(copy)
    assert changed != cell_module.code_fingerprint()
    monkeypatch.setattr(cell_module, "code_fingerprint", lambda: changed)
    assert cell_module.cell_key(suite, cell, "a", "rows", "teacher") != before


# What the hand-kept list of measuring code held (before it was derived from the imports): its folders' modules
HAND_KEPT = ("measurement", "backends", "tasks", "models", "results/rows.py", "config/measure.py", "config/backends.py")
# ... two of which no measurement imports: they resolve a suite's model names to folders before anything is built
BUILDING_ONLY = {"models/gguf.py", "models/references.py"}


def test_the_measuring_code_is_what_the_measurement_imports():
    root = cell_module.PACKAGE_ROOT
    measured = {path.relative_to(root).as_posix() for path in cell_module.measuring_code().values()}
    hand_kept = {path.relative_to(root).as_posix() for part in HAND_KEPT
                 for path in ((root / part).rglob("*.py") if (root / part).is_dir() else [root / part])}
    assert "common/statistics.py" in measured          # speed-up intervals: the hand-kept list missed it
    assert hand_kept - measured == BUILDING_ONLY
    assert {"backends/torch.py", "backends/onnxruntime.py", "backends/openvino.py"} <= measured  # by registry name
    assert not {path for path in measured if path.startswith(("compressors/", "training/", "execution/"))}


def test_a_module_the_measurement_comes_to_import_is_in_the_key(tmp_path: Path):
    """A new module is measuring code once a measured module imports it, even inside a function."""
    copy = tmp_path / "compbench"
    shutil.copytree(cell_module.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fingerprint = cell_module.code_fingerprint.__wrapped__
    before = fingerprint(copy)
    (copy / "common" / "rounding.py").write_text("DIGITS = 3\n")
    assert fingerprint(copy) == before                  # imported by nothing yet
    timing = copy / "measurement" / "timing.py"
    timing.write_text(timing.read_text() + "\n\ndef digits():\n    from compbench.common.rounding import DIGITS\n\n"
                      "    return DIGITS\n")
    imported = fingerprint(copy)
    (copy / "common" / "rounding.py").write_text("DIGITS = 4\n")
    assert fingerprint(copy) not in (imported, before)
    assert fingerprint(copy) == fingerprint(copy)       # the same files, the same key


def test_an_onnx_export_is_per_exporter_version(tmp_path: Path, monkeypatch):
    before = onnx_export_dir(tmp_path)
    newer(monkeypatch, "optimum")
    assert onnx_export_dir(tmp_path) != before and onnx_export_dir(tmp_path).parent == before.parent


def test_a_teacher_depends_on_the_training_libraries(monkeypatch, glue_data: Path, minilm_path: Path):
    from compbench.config.training import TeacherConfig
    from compbench.models.references import resolve_model
    from compbench.tasks.data import load_task_data
    from compbench.tasks.glue import get_task
    from compbench.tasks.sources import ParquetFolderSource
    from compbench.training.finetune import teacher_key

    data = load_task_data(get_task("sst2"), ParquetFolderSource(glue_data / "glue"), limit_train=8, limit_eval=8)
    base = resolve_model(str(minilm_path))
    before = teacher_key(base, data, TeacherConfig())
    newer(monkeypatch, "transformers")
    assert teacher_key(base, data, TeacherConfig()) != before
