"""Batches of files made durable together: one ``syncfs`` per folder instead of an ``fsync`` each.

On a real ext4 volume (a loop device): the local backend chooses it, the
copy is the same, the files' content is never ``fsync``ed one by one, and a
failed ``syncfs`` or an interruption publishes nothing and leaves no
temporary file. Where ``syncfs`` cannot be trusted (FUSE, tmpfs, kernels
before 5.8) each file keeps its ``fsync``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from finalcopy.backends.base import Backend, FileTransfer, is_temp_name
from finalcopy.backends.local import backend as local_backend
from finalcopy.backends.local import durability, sending
from finalcopy.backends.local.backend import LocalBackend
from finalcopy.backends.local.durability import batch_sync_usable
from finalcopy.backends.local.strategy import open_local_backend
from finalcopy.backends.options import DestinationOptions
from finalcopy.engine import CopyOptions, copy_tree
from finalcopy.engine.plan import scan
from finalcopy.engine.transfer import batches
from finalcopy.hashing import get_algorithm
from tests.support.fixtures import tmpfs
from tests.support.trees import make_tree, tree_content

pytestmark = pytest.mark.anyio

#: Three folders of small files: several batches, batches that span two folders.
FILES = {f"d{i // 70}/f{i:03d}.txt": f"file {i}\n".encode() * (i + 1) for i in range(210)}


@pytest.mark.parametrize(
    ("fs_type", "release", "usable"),
    [
        ("ext4", "6.1.0-18-amd64", True),
        ("xfs", "5.8.0", True),
        ("btrfs", "6.18.44-custom", True),
        ("ext4", "5.7.19", False),  # syncfs says nothing of write-back errors before 5.8
        ("ext4", "4.19.0-26-amd64", False),
        ("ext4", "weird", False),
        ("fuseblk", "6.1.0", False),  # FUSE's syncfs does nothing for ntfs-3g
        ("tmpfs", "6.1.0", False),
        ("nfs4", "6.1.0", False),
    ],
)
def test_syncfs_replaces_fsync_only_where_it_reports_errors(
    fs_type: str, release: str, usable: bool
) -> None:
    assert batch_sync_usable(fs_type, release) is usable


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Count the calls of ``module.name`` (still calling it); the list holds one entry per call."""
    real: Callable[[int], None] = getattr(module, name)
    calls: list[int] = []

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(module, name, counted)
    return calls


def _batches(src: Path) -> list[list[str]]:
    """The paths of each batch the engine sends, in order."""
    return [[f.path for f in batch] for batch in batches(scan(src).files)]


async def _on_ext4(
    ext4_mount: Path, tmp_path: Path, files: dict[str, bytes] = FILES
) -> tuple[Path, Path, Backend]:
    """A source tree of ``files``, a destination on the ext4 volume, and its backend."""
    src = make_tree(tmp_path / "src", files)
    dst = ext4_mount / "dst"
    return src, dst, await open_local_backend(dst, DestinationOptions())


def _temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


async def test_on_ext4_a_batch_is_synced_once_per_folder_and_copied_the_same(
    ext4_mount: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, backend = await _on_ext4(ext4_mount, tmp_path)
    assert isinstance(backend, LocalBackend) and backend.batch_sync
    assert "syncfs" in backend.strategy
    syncs = _count_calls(monkeypatch, sending, "syncfs")
    fsyncs = _count_calls(monkeypatch, os, "fsync")

    report = await copy_tree(src, backend, CopyOptions(jobs=2))

    assert report.ok and report.copied == len(FILES)
    assert tree_content(dst) == FILES
    groups = [{path.rpartition("/")[0] for path in batch} for batch in _batches(src)]
    assert len(syncs) == sum(len(folders) for folders in groups) == 6
    # What is still fsynced one by one: the .finalcopy/ files, never the copied ones.
    assert len(fsyncs) < len(FILES) // 10
    assert not _temporary_files(dst)


async def test_on_ext4_the_folders_are_sealed_by_one_syncfs_not_an_fsync_each(
    ext4_mount: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renames of a copy are made durable at its end: one syncfs for the file system."""
    files = {f"p{i:02d}/f{j}.txt": f"{i}.{j}\n".encode() for i in range(40) for j in range(3)}
    src, dst, backend = await _on_ext4(ext4_mount, tmp_path, files)
    seals = _count_calls(monkeypatch, local_backend, "syncfs")
    fsyncs = _count_calls(monkeypatch, os, "fsync")
    report = await copy_tree(src, backend, CopyOptions())
    assert report.ok and tree_content(dst) == files
    assert len(seals) == 1
    assert len(fsyncs) < 10  # the .finalcopy/ files; an fsync per folder would be 42


async def test_a_folder_on_another_file_system_below_keeps_an_fsync_per_file(
    ext4_mount: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syncfs stands in for fsync only on the file system it was chosen for: a mount
    below the destination (here a tmpfs; an ntfs-3g one's syncfs would do nothing)
    gets an fsync per file, and its folders an fsync each."""
    files = {
        f"{top}/f{i:02d}.txt": f"{top} {i}\n".encode() for top in ("a", "inner") for i in range(20)
    }
    src = make_tree(tmp_path / "src", files)
    dst = ext4_mount / "dst"
    (dst).mkdir()
    with tmpfs(dst / "inner", "4m"):
        backend = await open_local_backend(dst, DestinationOptions())
        synced_devices: list[int] = []

        def record(module: ModuleType) -> None:
            real: Callable[[int], None] = module.syncfs

            def syncfs(fd: int) -> None:
                synced_devices.append(os.fstat(fd).st_dev)
                real(fd)

            monkeypatch.setattr(module, "syncfs", syncfs)

        record(sending)
        record(local_backend)
        fsyncs = _count_calls(monkeypatch, os, "fsync")
        report = await copy_tree(src, backend, CopyOptions())
        assert report.ok and tree_content(dst) == files
        assert synced_devices and set(synced_devices) == {os.stat(ext4_mount).st_dev}
        assert len(fsyncs) >= 20  # the tmpfs's files, one each


async def test_on_tmpfs_and_fuse_each_file_keeps_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", FILES)
    backend = LocalBackend(tmp_path / "dst")  # batch_sync off: the default
    syncs = _count_calls(monkeypatch, sending, "syncfs")
    fsyncs = _count_calls(monkeypatch, os, "fsync")
    report = await copy_tree(src, backend, CopyOptions())
    assert report.ok and not syncs and len(fsyncs) >= len(FILES)


async def test_a_failed_syncfs_publishes_none_of_its_files_and_leaves_no_temporary_file(
    ext4_mount: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst, backend = await _on_ext4(ext4_mount, tmp_path)
    calls: list[int] = []

    def syncfs(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second batch's first folder: the end of d0
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        durability.syncfs(fd)

    monkeypatch.setattr(sending, "syncfs", syncfs)
    report = await copy_tree(src, backend, CopyOptions(jobs=1))

    failed = set(report.failed)
    second_batch = _batches(src)[1]
    end_of_d0 = [path for path in second_batch if path.startswith("d0/")]
    assert 0 < len(end_of_d0) < len(second_batch)
    assert failed == set(end_of_d0)  # the rest of the batch, in d1, has its own syncfs
    for message in report.failed.values():
        assert "cannot sync the new files of" in message and "/dst/d0'" in message, message
        assert "Input/output error" in message
    for path in end_of_d0:  # not published: no final name holds an unsynced file
        assert not (dst / path).exists()
    assert not _temporary_files(dst)
    assert {p: c for p, c in tree_content(dst).items() if p in FILES} == {
        p: c for p, c in FILES.items() if p not in failed
    }
    # A re-run copies what failed; the state skips the rest.
    monkeypatch.setattr(sending, "syncfs", durability.syncfs)
    again = await copy_tree(src, await open_local_backend(dst, DestinationOptions()))
    assert again.ok and again.copied == len(end_of_d0)
    assert tree_content(dst) == FILES


def test_an_interruption_inside_a_group_removes_every_temporary_file_it_made(
    tmp_path: Path,
) -> None:
    """Files already written but not yet synced are removed; the interruption goes on."""
    dst = tmp_path / "dst"
    dst.mkdir()
    backend = LocalBackend(dst, batch_sync=True)
    payload = b"x" * 100

    class Source:
        """Three files read whole; the third read is interrupted."""

        reads = 0

        def __init__(self) -> None:
            self.done = False

        def read_block(self, size: int) -> memoryview:
            if self.done:
                return memoryview(b"")
            Source.reads += 1
            if Source.reads == 3:
                raise KeyboardInterrupt
            self.done = True
            return memoryview(payload)

    transfers = [
        FileTransfer(f"f{i}", Source(), 0o644, None)  # type: ignore[arg-type]
        for i in range(4)
    ]
    with pytest.raises(KeyboardInterrupt):
        backend._put_batch(transfers, get_algorithm("blake3"))
    assert sorted(os.listdir(dst)) == []
