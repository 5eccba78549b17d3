"""A large file's write-back is started as it is written, not left to its ``fsync``.

On a real ext4 volume (a loop device) the local backend hints the kernel
(``sync_file_range``) every :data:`~finalcopy.backends.local.sending.WRITEBACK_STEP`
bytes of a large file, so the device writes while the copy goes on. Small
files get no extra system call, destinations without dirty pages to start
(tmpfs, ntfs-3g) get none either, and a refused hint changes nothing: the
``fsync`` that follows still proves the file durable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from finalcopy.backends.local import durability
from finalcopy.backends.local.durability import start_writeback
from finalcopy.backends.local.sending import WRITEBACK_STEP
from finalcopy.backends.local.strategy import open_local_backend
from finalcopy.backends.options import DestinationOptions
from finalcopy.engine import CopyOptions, copy_tree
from tests.support.fixtures import tmpfs
from tests.support.ntfs import NtfsMount
from tests.support.trees import make_tree, tree_content

pytestmark = pytest.mark.anyio

MiB = 1 << 20

LARGE = "videos/large.mp4"


@pytest.fixture
def files() -> dict[str, bytes]:
    """Two whole steps and a bit of a large file, one file shorter than a step, small ones."""
    step_mib = WRITEBACK_STEP // MiB
    return {
        LARGE: os.urandom(MiB) * (2 * step_mib + 1),
        "videos/medium.mov": os.urandom(MiB) * (step_mib - 1),
        **{f"thumbnails/t{i:03d}.jpg": f"thumbnail {i}\n".encode() * 200 for i in range(120)},
    }


@dataclass(frozen=True)
class Hint:
    """One ``sync_file_range`` call: the range, its flags, the file's size at that moment."""

    offset: int
    nbytes: int
    flags: int
    size: int


def _record_hints(monkeypatch: pytest.MonkeyPatch, fail: int = 0) -> list[Hint]:
    """Wrap the C library's ``sync_file_range``; each call is recorded, then made, or
    with ``fail`` refused with that errno as the kernel would."""
    real = durability._libc_sync_file_range()
    assert real is not None, "sync_file_range is Linux's"
    hints: list[Hint] = []

    def recorded(fd: int, offset: int, nbytes: int, flags: int) -> int:
        hints.append(Hint(offset, nbytes, flags, os.fstat(fd).st_size))
        if fail:
            ctypes.set_errno(fail)
            return -1
        return real(fd, offset, nbytes, flags)

    wrapper: Callable[[int, int, int, int], int] = recorded
    monkeypatch.setattr(durability, "_libc_sync_file_range", lambda: wrapper)
    return hints


async def _copy(files: dict[str, bytes], dst: Path, tmp_path: Path) -> None:
    """Copy ``files`` to ``dst`` with the backend its file system gets; all must succeed."""
    src = make_tree(tmp_path / "src", files)
    backend = await open_local_backend(dst, DestinationOptions())
    report = await copy_tree(src, backend, CopyOptions())
    assert report.ok, report.failed
    assert tree_content(dst) == files


async def test_on_ext4_a_large_file_is_hinted_step_by_step_and_small_files_never(
    files: dict[str, bytes],
    ext4_mount: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hints = _record_hints(monkeypatch)
    await _copy(files, ext4_mount / "dst", tmp_path)
    # Each whole step of the large file once, just after it was written; the
    # tail is left to the fsync, and nothing else is hinted (the medium file is
    # shorter than a step, the thumbnails a block each).
    step = WRITEBACK_STEP
    assert [(h.offset, h.nbytes) for h in hints] == [(0, step), (step, step)]
    assert [h.size for h in hints] == [step, 2 * step]
    assert {h.flags for h in hints} == {2}  # SYNC_FILE_RANGE_WRITE alone: never wait


async def test_a_refused_hint_fails_nothing_and_the_file_is_still_fsynced(
    files: dict[str, bytes],
    ext4_mount: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hints = _record_hints(monkeypatch, fail=errno.EIO)
    fsynced_sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced_sizes.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    await _copy(files, ext4_mount / "dst", tmp_path)
    assert len(hints) == 1  # refused once: the rest of the file is not hinted again
    assert len(files[LARGE]) in fsynced_sizes


@pytest.mark.parametrize("where", ["tmpfs", "ntfs-3g"])
async def test_without_dirty_pages_to_start_nothing_is_hinted(
    where: str,
    files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """tmpfs has no device, and FUSE (ntfs-3g) writes through: a hint would start nothing."""
    hints = _record_hints(monkeypatch)
    if where == "tmpfs":
        with tmpfs(tmp_path / "mnt", "256m") as mount:
            await _copy(files, mount / "dst", tmp_path)
    else:
        ntfs: NtfsMount = request.getfixturevalue("ntfs_mount")
        await _copy(files, ntfs.mountpoint / "dst", tmp_path)
    assert hints == []


#: ``cachestat``'s system call number, the same on every architecture.
_CACHESTAT = 451


class _CacheStat(ctypes.Structure):
    """``struct cachestat``: page counts of a range of a file, by state."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def _dirty_pages(fd: int, nbytes: int) -> int:
    """Dirty pages of the first ``nbytes`` of ``fd``: ``cachestat(2)`` (Linux 6.5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    window = (ctypes.c_uint64 * 2)(0, nbytes)
    stat = _CacheStat()
    if libc.syscall(_CACHESTAT, fd, ctypes.byref(window), ctypes.byref(stat), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            pytest.skip("cachestat(2) needs Linux 6.5 or later")
        raise OSError(code, os.strerror(code))
    return int(stat.dirty)


def test_a_hint_really_sends_the_range_to_the_device(ext4_mount: Path) -> None:
    """Without the hint the kernel would write these pages after 30 s
    (``vm.dirty_expire_centisecs``); with it, they leave the dirty state at once."""
    fd = os.open(ext4_mount / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, os.urandom(16 * MiB))
        assert _dirty_pages(fd, 16 * MiB) > 0
        assert start_writeback(fd, 0, 16 * MiB)
        deadline = time.monotonic() + 10
        while _dirty_pages(fd, 16 * MiB):
            assert time.monotonic() < deadline, "the hinted range is still dirty"
            time.sleep(0.05)
    finally:
        os.close(fd)


def test_offsets_past_4_gib_are_passed_whole_and_a_bad_range_is_refused(
    ext4_mount: Path,
) -> None:
    """64-bit offsets (a 32-bit C int would wrap 4 GiB - 4 KiB to -4096, which the kernel
    refuses), and a refusal is a False, never an exception."""
    fd = os.open(ext4_mount / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 4096)
        assert start_writeback(fd, (4 << 30) - 4096, 4096)
        assert not start_writeback(fd, -4096, 4096)
    finally:
        os.close(fd)
