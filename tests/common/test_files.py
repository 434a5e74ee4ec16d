"""The one atomic-write helper: a reader sees the old content or the new, never half; temporary names
never collide between processes (the bug: parity files named by id(self) collided across forked workers)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from compbench.common.files import atomic_path, write_atomically


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path: Path):
    target = tmp_path / "deep" / "result.json"
    write_atomically(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["result.json"]
    write_atomically(target, b"new")
    assert target.read_text() == "new"


def test_a_folder_already_in_place_is_kept(tmp_path: Path):
    final = tmp_path / "artifact"
    with atomic_path(final, folder=True) as tmp:
        (tmp / "weights").write_text("first")
    with atomic_path(final, folder=True) as tmp:
        (tmp / "weights").write_text("second")
    assert (final / "weights").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["artifact"]


def _temporary_name(final: str, queue) -> None:
    with atomic_path(Path(final)) as tmp:
        queue.put(tmp.name)
        tmp.write_text("x")


def test_temporary_names_differ_in_forked_workers(tmp_path: Path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_temporary_name, args=(str(tmp_path / "logits.npy"), queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    names = {queue.get(timeout=5) for _ in workers}
    assert len(names) == 4 and (tmp_path / "logits.npy").read_text() == "x"
