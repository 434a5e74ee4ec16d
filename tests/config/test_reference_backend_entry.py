"""The suite's ``reference_backend``: the teacher as served today, which every cell is also timed against. Where
its device and threads are not given they are each cell's; it survives the copy of the suite a run keeps; a mistake
in it is one line with exit 2."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from compbench.cli import main
from compbench.common.envinfo import usable_cores
from compbench.config.cells import expand, reference_backend, same_backend
from compbench.config.loading import load_suite, suite_yaml, validate_suite

BACKENDS = [{"name": "torch"}, {"name": "torch", "profile": "edge"}, {"name": "torch", "threads": 1},
            {"name": "onnxruntime", "options": {"graph_optimization": "all"}},
            {"name": "torch", "device": "cuda", "precision": "fp16"}]


def suite(**extra):
    return validate_suite({"name": "r", "tasks": ["sst2"], "backends": BACKENDS, **extra}, "r.yaml")


def resolved(the_suite) -> dict[str, str]:
    return {cell.backend.label: reference_backend(the_suite, cell.backend).label for cell in expand(the_suite)}


def test_the_default_is_pytorch_fp32_on_each_cells_device_and_threads():
    cores = usable_cores()
    assert resolved(suite()) == {
        "torch:cpu:default": f"torch:cpu:default:t{cores}", "torch:cpu:edge": "torch:cpu:default:t1",
        "torch:cpu:default:t1": "torch:cpu:default:t1",
        "onnxruntime:cpu:default:graph_optimization=all": f"torch:cpu:default:t{cores}",
        "torch:cuda:default:fp16": f"torch:cuda:default:t{cores}"}


def test_what_the_reference_sets_is_kept_and_the_rest_follows_the_cell():
    fixed = suite(reference_backend={"name": "onnxruntime", "device": "cpu", "threads": 2})
    assert set(resolved(fixed).values()) == {"onnxruntime:cpu:default:t2"}
    edge = suite(reference_backend={"name": "torch", "profile": "edge"})       # a profile's threads
    assert set(resolved(edge).values()) == {"torch:cpu:edge:t1", "torch:cuda:edge:t1"}
    assert load_suite_text("reference_backend: null\n").reference_backend is None


def load_suite_text(text: str):
    return validate_suite(yaml.safe_load("name: r\ntasks: [sst2]\n" + text), "r.yaml")


def test_which_cells_run_as_the_reference_runs():
    """A cell's own-backend teacher (fp32) is the reference where backend, device, precision, threads and options
    (defaults filled in) agree; a profile is only a name for threads."""
    the_suite = suite()
    by_label = {cell.backend.label: cell.backend for cell in expand(the_suite)}

    def is_reference(label: str) -> bool:
        backend = by_label[label]
        return same_backend(backend.model_copy(update={"precision": "fp32"}), reference_backend(the_suite, backend))

    assert is_reference("torch:cpu:default") and is_reference("torch:cpu:edge") and is_reference("torch:cpu:default:t1")
    assert is_reference("torch:cuda:default:fp16")          # its fp32 teacher on the GPU is the reference there
    assert not is_reference("onnxruntime:cpu:default:graph_optimization=all")
    ort = suite(reference_backend={"name": "onnxruntime"})
    written = next(c.backend for c in expand(ort) if c.backend.name == "onnxruntime")
    assert same_backend(written, reference_backend(ort, written))      # {} and graph_optimization: all agree


def test_the_run_folders_copy_of_the_suite_keeps_the_reference(tmp_path):
    """``suite_yaml`` writes every field (device: null too): read back, each cell resolves the same reference."""
    for extra in ({}, {"reference_backend": {"name": "torch", "profile": "edge"}}, {"reference_backend": None}):
        original = suite(**extra)
        copy = tmp_path / "copy.yaml"
        copy.write_text(suite_yaml(original))
        again = load_suite(copy)
        assert again.reference_backend == original.reference_backend
        if original.reference_backend is not None:
            assert resolved(again) == resolved(original)


def test_a_mistake_in_the_reference_backend_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: r\ntasks: [sst2]\nreference_backend: {name: torch, thread: 2}\n")
    done = CliRunner().invoke(main, ["validate", str(path)])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    (line,) = done.output.strip().splitlines()
    assert "reference_backend.thread: unknown field 'thread'" in line and "did you mean 'threads'?" in line
