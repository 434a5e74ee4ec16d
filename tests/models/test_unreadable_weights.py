"""A damaged safetensors file in an artifact (cut off, emptied, overwritten) is an error naming that file and saying
what to do, from every format that reads one: counting parameters, loading the model and exporting it alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compbench.common.errors import CompbenchError, UnreadableArtifactError
from compbench.models.artifact import META_FILE, ModelArtifact
from compbench.models.formats.low_rank import LOW_RANK_SPEC
from compbench.models.formats.sparse import SPARSE_WEIGHTS, save_sparse_state

DAMAGE = {
    "cut off": lambda data: data[: len(data) // 2],
    "header cut off": lambda data: data[:50],
    "empty": lambda data: b"",
    "not safetensors": lambda data: b"<html>404 not found</html>\n",
    "bytes added": lambda data: data + b"\0" * 16,
}


def copy_of(tiny_artifact, folder: Path, fmt: str) -> ModelArtifact:
    """The tiny model's files in ``folder`` as an artifact of format ``fmt`` (hf, hf-low-rank or hf-sparse)."""
    folder.mkdir()
    for source in tiny_artifact.path.iterdir():
        if source.is_file() and source.name != META_FILE:
            shutil.copy(source, folder / source.name)
    if fmt == "hf-low-rank":
        (folder / LOW_RANK_SPEC).write_text(json.dumps({"ranks": {}}))
    if fmt == "hf-sparse":
        state = tiny_artifact.torch_model().state_dict()
        (folder / "model.safetensors").unlink()
        save_sparse_state(folder, state, [name for name in state if name.endswith("dense.weight")])
    artifact = ModelArtifact(path=folder, task="sst2", num_labels=2, format=fmt, hash="copy")
    artifact.write_meta()
    return artifact


def weights_of(artifact: ModelArtifact) -> Path:
    return artifact.path / (SPARSE_WEIGHTS if artifact.format == "hf-sparse" else "model.safetensors")


@pytest.mark.parametrize("fmt", ["hf", "hf-low-rank", "hf-sparse"])
def test_an_undamaged_copy_loads(tiny_artifact, tmp_path, fmt):
    artifact = copy_of(tiny_artifact, tmp_path / "a", fmt)
    assert artifact.parameter_counts()[0] == tiny_artifact.parameter_counts()[0]
    assert artifact.torch_model() is not None


@pytest.mark.parametrize("fmt", ["hf", "hf-low-rank", "hf-sparse"])
@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_safetensors_file_is_named(tiny_artifact, tmp_path, fmt, damage):
    artifact = copy_of(tiny_artifact, tmp_path / "a", fmt)
    weights = weights_of(artifact)
    weights.write_bytes(damage(weights.read_bytes()))
    for read in (artifact.parameter_counts, artifact.torch_model, artifact.onnx_files):
        with pytest.raises(UnreadableArtifactError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{weights}: not a readable safetensors file ("), message
        assert f"remove the artifact folder {artifact.path}" in message and "\n" not in message, message
        assert isinstance(info.value, CompbenchError)
