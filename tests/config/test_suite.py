"""Suite validation: defaults, expansion, and one precise line for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from compbench.common.errors import UsageError
from compbench.common.plugins import COMPRESSORS
from compbench.compressors.base import Compressor
from compbench.config.cells import expand
from compbench.config.loading import load_suite
from compbench.config.measure import MeasureConfig
from compbench.config.schema import BASELINE

SUITES = Path(__file__).resolve().parents[2] / "suites"
MINIMAL = "name: mini\ntasks: [sst2]\n"
TEST_COMPRESSOR = "test-lowrank"


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def usage_error(path: Path) -> str:
    """The message of the UsageError that loading ``path`` raises; it must be one line naming the file."""
    with pytest.raises(UsageError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


class LowRankParams(BaseModel):            # pydantic's default: unknown keys would be dropped silently
    rank: int = Field(8, gt=0)
    iterations: int = 2


class StrictLowRankParams(LowRankParams):  # unknown keys are pydantic's own error
    model_config = ConfigDict(extra="forbid")


@pytest.fixture(params=[LowRankParams, StrictLowRankParams], ids=["lenient-params", "strict-params"])
def compressor(request):
    """A throwaway compressor registered for one test, then removed from the registry again."""

    class LowRank(Compressor):
        name = TEST_COMPRESSOR
        Params = request.param

        def compress(self, model, ctx):
            raise NotImplementedError

    COMPRESSORS.register(LowRank, origin="test")
    yield LowRank
    COMPRESSORS._classes.pop(TEST_COMPRESSOR, None)
    COMPRESSORS._origins.pop(TEST_COMPRESSOR, None)


def one_step_suite(params: str = "{}", pipeline: str = "lowrank") -> str:
    return MINIMAL + (f"pipelines:\n  - name: {pipeline}\n    steps:\n      - compressor: {TEST_COMPRESSOR}\n"
                      f"        params: {params}\n")


# ---------------------------------------------------------------- valid suites


def test_quick_suite_validates():
    suite = load_suite(SUITES / "quick.yaml")
    assert suite.name == "quick"
    assert [p.name for p in suite.pipelines][0] == BASELINE
    cells = expand(suite)
    expected = sum(p.runs_on(b) for p in suite.pipelines for b in suite.backends) * len(suite.tasks)
    assert len(cells) == expected and expected < len(suite.tasks) * len(suite.pipelines) * len(suite.backends)
    assert {c.backend.name for c in cells if c.pipeline.name == "ort-int8-dynamic"} == {"onnxruntime"}


def test_a_pipeline_can_be_kept_to_one_device(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL + "pipelines: [{name: half, steps: [{compressor: quantize, "
                             "params: {method: fp16}}], backends: ['torch:cuda']}]\n"
                             "backends: [{name: torch}, {name: torch, device: cuda}, {name: onnxruntime}]\n"))
    cells = {(c.pipeline.name, c.backend.label) for c in expand(suite)}
    assert ("half", "torch:cuda:default") in cells and ("half", "torch:cpu:default") not in cells
    assert ("baseline", "onnxruntime:cpu:default") in cells
    exact = load_suite(write(tmp_path, MINIMAL + "pipelines: [{name: half, backends: ['torch:cuda:default']}]\n"
                             "backends: [{name: torch, device: cuda}, {name: torch, device: cuda, precision: fp16}]\n"))
    assert {c.backend.label for c in expand(exact) if c.pipeline.name == "half"} == {"torch:cuda:default"}


def test_glue_suite_validates():
    path = SUITES / "glue.yaml"
    suite = load_suite(path)
    assert len(suite.tasks) >= 1 and suite.pipelines[0].name == BASELINE


def test_minimal_suite_gets_defaults(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL))
    assert [p.name for p in suite.pipelines] == [BASELINE]
    assert suite.pipelines[0].steps == []
    assert [(b.name, b.device, b.profile, b.precision, b.threads) for b in suite.backends] == [
        ("torch", "cpu", "default", "fp32", None)]
    assert suite.measure == MeasureConfig()
    assert suite.resolve_path("data") == (tmp_path / "data").resolve()


def test_baseline_is_added_first(tmp_path, compressor):
    suite = load_suite(write(tmp_path, one_step_suite()))
    assert [p.name for p in suite.pipelines] == [BASELINE, "lowrank"]


def test_params_are_validated_and_defaulted(tmp_path, compressor):
    suite = load_suite(write(tmp_path, one_step_suite("{rank: 4}")))
    assert suite.pipelines[1].steps[0].params == {"rank": 4, "iterations": 2}


def test_expand_gives_every_combination_with_unique_ids(tmp_path, compressor):
    text = one_step_suite().replace("tasks: [sst2]", "tasks: [sst2, rte]") + (
        "backends:\n  - {name: torch}\n  - {name: torch, profile: edge}\n  - {name: torch, threads: 2}\n")
    suite = load_suite(write(tmp_path, text))
    cells = expand(suite)
    assert len(cells) == 2 * 2 * 3
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {(c.task, c.pipeline.name) for c in cells} == {(t, p) for t in ("sst2", "rte")
                                                          for p in (BASELINE, "lowrank")}
    assert cells[0].cell_id == "sst2/baseline/torch:cpu:default"


# ---------------------------------------------------------------- one line per mistake

MISTAKES = {
    # id: (suite text, fragments the one-line message must contain)
    "unknown top-level key": (MINIMAL + "taks: [rte]\n", ["taks: unknown field 'taks'", "did you mean 'tasks'?"]),
    "unknown teacher key": (MINIMAL + "teacher: {batchsize: 8}\n",
                            ["teacher.batchsize:", "did you mean 'batch_size'?"]),
    "unknown measure key": (MINIMAL + "measure: {batch_size: [1]}\n",
                            ["measure.batch_size:", "did you mean 'batch_sizes'?"]),
    "unknown backend key": (MINIMAL + "backends: [{name: torch, devise: cpu}]\n",
                            ["backends[0].devise:", "valid: device, name, options, precision, profile, threads",
                             "did you mean 'device'?"]),
    "unknown step key": (MINIMAL + "pipelines: [{name: p, steps: [{compresor: x}]}]\n",
                         ["pipelines[0].steps[0].compresor:", "valid: compressor, params",
                          "did you mean 'compressor'?"]),
    "unknown task": ("name: x\ntasks: [sst]\n",
                     ["tasks[0]: unknown task 'sst'", "valid: cola,", "did you mean 'sst2'?"]),
    "unknown backend": (MINIMAL + "backends: [{name: trch}]\n",
                        ["backends[0].name: unknown backend 'trch'", "valid: llamacpp, onnxruntime, ", "torch",
                         "did you mean 'torch'?"]),
    "unknown reference_backend key": (MINIMAL + "reference_backend: {name: torch, devise: cpu}\n",
                                      ["reference_backend.devise: unknown field 'devise'",
                                       "valid: device, name, options, precision, profile, threads",
                                       "did you mean 'device'?"]),
    "unknown reference backend": (MINIMAL + "reference_backend: {name: trch}\n",
                                  ["reference_backend.name: unknown backend 'trch'", "did you mean 'torch'?"]),
    "reference backend without a name": (MINIMAL + "reference_backend: {device: cpu}\n",
                                         ["reference_backend.name: missing required field"]),
    "unknown reference device": (MINIMAL + "reference_backend: {name: torch, device: gpu}\n",
                                 ["reference_backend.device:", "'cpu' or 'cuda'", "'gpu'"]),
    "unknown reference profile": (MINIMAL + "reference_backend: {name: torch, profile: edg}\n",
                                  ["reference_backend.profile: unknown profile 'edg'", "did you mean 'edge'?"]),
    "unknown reference option": (MINIMAL + "reference_backend: {name: onnxruntime, "
                                           "options: {graph_optimisation: all}}\n",
                                 ["reference_backend.options.graph_optimisation: unknown field",
                                  "did you mean 'graph_optimization'?"]),
    "reference backend not a mapping": (MINIMAL + "reference_backend: torch\n",
                                        ["reference_backend: must be a mapping", "name", "'torch'"]),
    "unknown pipeline device": (MINIMAL + "pipelines: [{name: p, backends: ['torch:gpu']}]\n",
                                ["pipelines[0].backends[0]:", "unknown device 'gpu'", "cpu, cuda"]),
    "unknown profile": (MINIMAL + "backends: [{name: torch, profile: edg}]\n",
                        ["backends[0].profile: unknown profile 'edg'", "valid: default, edge", "did you mean 'edge'?"]),
    "unknown device": (MINIMAL + "backends: [{name: torch, device: gpu}]\n",
                       ["backends[0].device:", "'cpu' or 'cuda'", "'gpu'"]),
    "wrong type": (MINIMAL + "teacher: {batch_size: many}\n", ["teacher.batch_size: must be an integer", "'many'"]),
    "fractional": (MINIMAL + "teacher: {batch_size: 1.5}\n", ["teacher.batch_size: must be a whole number", "1.5"]),
    "out of range": (MINIMAL + "teacher: {batch_size: 0}\n",
                     ["teacher.batch_size:", "greater than or equal to 1", "got 0"]),
    "negative limit": (MINIMAL + "data: {limit_train: -5}\n",
                       ["data.limit_train:", "greater than or equal to 1", "got -5"]),
    "section not a mapping": (MINIMAL + "teacher: [1]\n", ["teacher: must be a mapping", "batch_size", "got a list"]),
    "tasks not a list": ("name: x\ntasks: sst2\n", ["tasks: must be a list", "'sst2'"]),
    "empty tasks": ("name: x\ntasks: []\n", ["tasks: must not be empty", "sst2"]),
    "missing tasks": ("name: x\n", ["tasks: missing required field", "sst2"]),
    "duplicate task": ("name: x\ntasks: [sst2, rte, sst2]\n", ["tasks[2]: duplicate task 'sst2'", "tasks[0]"]),
    "duplicate pipelines": (MINIMAL + "pipelines: [{name: p}, {name: p}]\n",
                            ["pipelines[1].name: duplicate pipeline name 'p'", "pipelines[0]"]),
    "duplicate backends": (MINIMAL + "backends: [{name: torch, profile: edge}, {name: torch, profile: edge}]\n",
                           ["backends[1]: duplicate backend 'torch:cpu:edge'", "backends[0]"]),
    "duplicate yaml key": (MINIMAL + "seed: 1\nseed: 2\n", ["line 4", "duplicate key 'seed'", "line 3"]),
    "invalid yaml": ("name: x\ntasks: [sst2\n", ["invalid YAML at line 3"]),
    "yaml list": ("- name: x\n- tasks: [sst2]\n", ["a suite must be a mapping", "got a list"]),
    "empty file": ("", ["a suite must be a mapping", "empty file"]),
}


@pytest.mark.parametrize("text, fragments", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_gives_one_precise_line(tmp_path, text, fragments):
    message = usage_error(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Input should" not in message and "Field required" not in message   # pydantic's wording is rephrased


def test_unknown_compressor_says_what_is_valid(tmp_path):
    message = usage_error(write(tmp_path, MINIMAL + "pipelines: [{name: p, steps: [{compressor: svdd}]}]\n"))
    assert "pipelines[0].steps[0].compressor: unknown compressor 'svdd'" in message
    names = COMPRESSORS.names()
    assert (f"valid: {', '.join(names)}" if names else "no compressors yet") in message
    assert "compbench.compressors" in message or names


def test_unknown_compressor_suggests_a_registered_one(tmp_path, compressor):
    message = usage_error(write(tmp_path, MINIMAL + "pipelines: [{name: p, steps: [{compressor: test-lowrnak}]}]\n"))
    assert f"did you mean '{TEST_COMPRESSOR}'?" in message


def test_baseline_pipeline_takes_no_steps(tmp_path, compressor):
    message = usage_error(write(tmp_path, one_step_suite(pipeline=BASELINE)))
    assert "pipelines[0].steps: the pipeline name 'baseline' is reserved" in message


def test_params_out_of_range(tmp_path, compressor):
    message = usage_error(write(tmp_path, one_step_suite("{rank: 0}")))
    assert "pipelines[0].steps[0].params.rank:" in message
    assert "greater than 0" in message and "got 0" in message


def test_params_unknown_key(tmp_path, compressor):
    message = usage_error(write(tmp_path, one_step_suite("{rnak: 4}")))
    assert "pipelines[0].steps[0].params.rnak: unknown field 'rnak'" in message
    assert "valid: iterations, rank" in message and "did you mean 'rank'?" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(UsageError, match="nope.yaml does not exist"):
        load_suite(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        load_suite(tmp_path)


def test_two_mistakes_give_two_lines(tmp_path):
    with pytest.raises(UsageError) as info:
        load_suite(write(tmp_path, MINIMAL + "teacher: {epochs: 0, batchsize: 3}\n"))
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("teacher.epochs:" in line for line in lines) and any("teacher.batchsize:" in line for line in lines)


def test_shipped_suites_are_plain_yaml():
    """The duplicate-key check only adds errors: the shipped suites read the same as with yaml.safe_load."""
    for path in sorted(SUITES.glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["name"] == load_suite(path).name


def test_misspelt_required_key_is_one_mistake(tmp_path):
    """``taks:`` instead of ``tasks:`` is one line (the unknown key's), not also 'tasks: missing'."""
    message = usage_error(write(tmp_path, "name: x\ntaks: [sst2]\n"))
    assert "taks: unknown field 'taks'" in message and "did you mean 'tasks'?" in message


def test_two_params_mistakes_give_two_lines(tmp_path, compressor):
    with pytest.raises(UsageError) as info:
        load_suite(write(tmp_path, one_step_suite("{rank: 0, iterashuns: 3}")))
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("params.rank:" in line for line in lines)
    assert any("params.iterashuns:" in line and "did you mean 'iterations'?" in line for line in lines)


def test_not_utf8(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert "not a text file" in usage_error(path)
