"""Model references and the content-addressed artifact store."""

from __future__ import annotations

import json

import pytest

from compbench.cache.store import ArtifactStore
from compbench.common.errors import UsageError
from compbench.models.artifact import META_FILE, ModelArtifact
from compbench.models.references import resolve_model


def test_packaged_alias_resolves_to_the_real_weights(minilm_path):
    resolved = resolve_model("minilm-l6")
    assert resolved.location == str(minilm_path)
    assert resolved.identity.startswith("files:")
    assert json.loads((minilm_path / "config.json").read_text())["num_hidden_layers"] == 6


def test_local_folder_relative_to_the_suite_and_hub_ids(minilm_path, tmp_path):
    (tmp_path / "m").symlink_to(minilm_path)
    assert resolve_model("m", base_dir=tmp_path).identity == resolve_model("minilm-l6").identity
    hub = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert hub.location == "sentence-transformers/all-MiniLM-L6-v2" and hub.identity.startswith("hub:")


def test_bad_model_references_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model("./no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_store_builds_once_and_keeps_metadata(tiny_artifact, tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def write(folder):
        calls.append(folder)
        for source in tiny_artifact.path.iterdir():
            if source.is_file():      # not caches other tests made there (an onnx/ export)
                (folder / source.name).write_bytes(source.read_bytes())
        return ModelArtifact(path=folder, task="sst2", num_labels=2, format="hf", hash="", lineage=[{"step": "copy"}])

    first = store.build("abc", write)
    second = store.build("abc", write)
    assert len(calls) == 1 and first.path == second.path == store.path_for("abc")
    assert second.hash == "abc" and second.lineage == [{"step": "copy"}]
    assert json.loads((first.path / META_FILE).read_text())["format"] == "hf"
    assert first.size_bytes() == tiny_artifact.size_bytes()


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)

    def write(folder):
        (folder / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError):
        store.build("bad", write)
    assert store.get("bad") is None
    assert list((tmp_path / "artifacts").iterdir()) == []
