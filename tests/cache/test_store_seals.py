"""The artifact store seals what it builds and checks the seal on every use: damaged bytes, a file added
or missing, or a folder without its compbench.json are never used, and the key is built again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from compbench.cache.admin import entries, listing, prune
from compbench.cache.store import ArtifactStore, DamagedArtifactError
from compbench.common.sealing import manifest_of
from compbench.models.artifact import META_FILE, ModelArtifact


def copy_build(source: ModelArtifact):
    """A ``write`` for the store: the tiny artifact's files (a real model, built in no time)."""
    def write(folder):
        for path in source.path.iterdir():
            if path.is_file() and path.name != META_FILE:
                shutil.copy(path, folder / path.name)
        return ModelArtifact(path=folder, task="sst2", num_labels=2, format="hf", hash="")
    return write


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "cache", warn=messages.append)


messages: list[str] = []


@pytest.fixture(autouse=True)
def no_messages():
    messages.clear()


def test_a_build_is_sealed_with_every_file_size_and_sha256(store, tiny_artifact):
    built = store.build("k", copy_build(tiny_artifact))
    meta = json.loads((built.path / META_FILE).read_text())
    assert meta["files"] == manifest_of(tiny_artifact.path, (META_FILE, ".last_used", "onnx"))
    weights = meta["files"]["model.safetensors"]
    assert weights["bytes"] == (tiny_artifact.path / "model.safetensors").stat().st_size
    import hashlib
    assert weights["sha256"] == hashlib.sha256((built.path / "model.safetensors").read_bytes()).hexdigest()
    assert built.content_hash and store.get("k").content_hash == built.content_hash


def test_damaged_weights_are_never_used_and_the_key_is_built_again(store, tiny_artifact):
    built = store.build("k", copy_build(tiny_artifact))
    weights = built.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = os.urandom(4096)     # same size, other bytes
    weights.write_bytes(bytes(data))
    assert store.get("k") is None
    assert len(messages) == 1 and "model.safetensors: its bytes differ from the seal" in messages[0]
    assert not built.path.exists() and [e.kind for e in entries(store.root)] == ["damaged"]
    calls = []
    rebuilt = store.build("k", lambda folder: calls.append(1) or copy_build(tiny_artifact)(folder))
    assert calls == [1] and rebuilt.content_hash == built.content_hash
    with pytest.raises(Exception, match="is not in the cache"):
        store.require("other")


@pytest.mark.parametrize("damage", ["truncate", "add", "remove", "no-meta", "no-seal", "bad-meta"])
def test_every_kind_of_damage_is_caught(store, tiny_artifact, damage):
    built = store.build("k", copy_build(tiny_artifact))
    if damage == "truncate":
        with open(built.path / "model.safetensors", "r+b") as handle:
            handle.truncate(1000)
    elif damage == "add":
        (built.path / "pytorch_model.bin").write_bytes(b"planted")
    elif damage == "remove":
        (built.path / "config.json").unlink()
    elif damage == "no-meta":
        (built.path / META_FILE).unlink()
    elif damage == "no-seal":
        meta = json.loads((built.path / META_FILE).read_text())
        del meta["files"]
        (built.path / META_FILE).write_text(json.dumps(meta))
    else:
        (built.path / META_FILE).write_text("{not json")
    assert store.get("k") is None and len(messages) == 1, messages
    assert store.build("k", copy_build(tiny_artifact)).path == built.path     # a good one in its place


def test_a_folder_without_its_record_is_listed_and_pruned_and_replaced_by_a_build(store, tiny_artifact):
    """The bug: a folder without compbench.json blocked its key (each build thrown away because the folder
    existed, then a failure) and cache ls / prune did not see it."""
    stray = store.path_for("k")
    stray.mkdir(parents=True)
    (stray / "model.safetensors").write_bytes(b"half")
    assert any("incomplete" in line and "k" in line for line in listing(store.root))
    assert [e.kind for e in prune(store.root, None, False, dry_run=True)] == ["incomplete"]
    built = store.build("k", copy_build(tiny_artifact))
    assert built.path == stray and (stray / META_FILE).is_file() and store.get("k") is not None


def test_a_read_only_cache_refuses_a_damaged_artifact_in_one_line_naming_the_file(tmp_path, tiny_artifact,
                                                                                    monkeypatch):
    """Where the damaged folder cannot be moved aside, the store refuses it instead of using it (the tests run
    as root, whom a read-only folder does not stop: the rename is refused as the kernel would refuse it)."""
    store = ArtifactStore(tmp_path / "cache")
    built = store.build("k", copy_build(tiny_artifact))
    with open(built.path / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(DamagedArtifactError) as caught:
        store.get("k")
    monkeypatch.undo()
    message = str(caught.value)
    assert "\n" not in message and f"{built.path / 'model.safetensors'}: 1000 bytes, sealed with" in message
    assert "cannot be changed" in message


def test_checking_a_seal_twice_hashes_once(store, tiny_artifact, monkeypatch):
    built = store.build("k", copy_build(tiny_artifact))
    store.get("k")                  # the first check of the folder in its place hashes its files
    opened = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    import compbench.common.sealing as sealing
    monkeypatch.setattr(sealing, "open", counting_open, raising=False)
    store.get("k")
    store.get("k")
    assert not [p for p in opened if p.endswith("model.safetensors")], "unchanged files are not read again"
    assert built.path.is_dir()


def test_a_planted_pickle_is_never_unpickled_by_listing_or_checking(store, tiny_artifact, tmp_path):
    """The seal check reads bytes only: a pickle in a cache folder runs nothing there either."""
    built = store.build("k", copy_build(tiny_artifact))
    marker = tmp_path / "ran"
    code = f"import os\nclass P:\n    def __reduce__(self):\n        return (os.mkdir, ({str(marker)!r},))\n"
    subprocess.run([sys.executable, "-c", code + f"import pickle\nopen({str(built.path / 'x.pkl')!r}, 'wb')"
                    ".write(pickle.dumps(P()))"], check=True)
    assert store.get("k") is None and not marker.exists()
    listing(store.root)
    assert not marker.exists()


def test_an_onnx_export_is_sealed_and_made_again_when_damaged(store, tiny_artifact):
    """The export is made on first use, inside the artifact (outside its seal): it is sealed on its own."""
    built = store.build("k", copy_build(tiny_artifact))
    model_file = built.onnx_files()[0]
    assert (model_file.parent / "seal.json").is_file()
    good = model_file.read_bytes()
    model_file.write_bytes(good[:-100] + os.urandom(100))
    assert store.get("k") is not None                            # the artifact itself is untouched
    again = built.onnx_files()[0]
    assert again == model_file and again.read_bytes() == good    # exported again, not served damaged
    assert [p.name for p in model_file.parent.parent.iterdir() if "damaged" in p.name]


def test_a_cached_array_is_served_only_while_it_matches_its_seal(tmp_path):
    import numpy as np

    from compbench.common.sealing import load_sealed_array, save_sealed_array

    path = tmp_path / "logits.npy"
    assert load_sealed_array(path) is None
    save_sealed_array(path, np.arange(6.0).reshape(3, 2))
    assert load_sealed_array(path).tolist() == [[0, 1], [2, 3], [4, 5]]
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x00" * 8
    path.write_bytes(bytes(data))
    assert load_sealed_array(path) is None
