"""When a local file becomes durable: one ``fsync`` each, or one ``syncfs`` per folder of a batch.

A file must be on stable storage before its rename publishes it: a final
name never holds a partial file, not even after a power cut. One ``fsync``
per file does that, but on a journalling file system every ``fsync``
commits the journal and flushes the disk's cache, and for a tree of small
files that is most of the copy (about 0.3 ms a file on an ext4 virtual
disk, against 4 KiB written in microseconds). ``syncfs(2)`` makes every
dirty file of the file system durable in one commit and one flush, so the
local backend writes the files of a batch that share a folder, syncs them
together, then renames them (:class:`~.sending.BatchSend`), and at the end
of a copy makes every folder's renames durable with one ``syncfs`` per file
system rather than an ``fsync`` per folder (:meth:`LocalBackend.sync_dirs`).

``syncfs`` replaces ``fsync`` only where it is as trustworthy:

* Linux 5.8 or later, where it reports the write-back errors of the file
  system since the descriptor it is given was opened (before 5.8 it always
  returned 0, so a failed write would go unnoticed);
* a file system whose ``sync_fs`` writes file data: :data:`BATCH_SYNC_FS_TYPES`.
  FUSE's ``syncfs`` does nothing for ntfs-3g or exfat-fuse, so those keep an
  ``fsync`` per file (their driver turns it into a real flush); tmpfs has no
  device, so either costs nothing there.

What a crash at any instant leaves, with batches synced together:

* before ``syncfs`` returns: the batch's temporary files (``.fc-*.part``),
  some partial, and the final names untouched; a re-run reuses (clears)
  those temporary names and copies the files again;
* after it: every temporary file is durable whole; a rename done before the
  crash may itself be lost until the folder is synced (the engine syncs the
  folders when it seals the copy), which leaves the old entry or none at the
  final name, never a partial file; a re-run finds it missing or different
  and copies it again. The state file, which lets a re-run skip files, is
  written after the files it names are published.

A large file need not wait for its ``fsync`` to reach the device: with a
lot of memory the kernel's background write-back starts only after 30 s or
gigabytes of dirty pages, so every byte of a file would go to the device
during its ``fsync``, with the copy waiting. :func:`start_writeback` hands
each range to the device as soon as it is written (as PostgreSQL's
``backend_flush_after`` does), so the device works while the copy goes on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from collections.abc import Callable
from functools import cache

__all__ = ["BATCH_SYNC_FS_TYPES", "batch_sync_usable", "start_writeback", "syncfs"]

#: File systems whose ``syncfs`` writes every dirty file's data and reports write-back errors.
BATCH_SYNC_FS_TYPES = frozenset({"ext4", "xfs", "btrfs"})

#: The first Linux release whose ``syncfs`` returns write-back errors.
_ERRORS_REPORTED_SINCE = (5, 8)

#: ``sync_file_range(2)``'s flag that starts the write-back of a range and waits for nothing.
_SYNC_FILE_RANGE_WRITE = 2


def _kernel_release(release: str) -> tuple[int, int]:
    """``(major, minor)`` of a Linux release string such as ``6.1.0-18-amd64``; (0, 0) if odd."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


@cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs``, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


@cache
def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """The C library's ``sync_file_range`` (Linux only), or None where there is none."""
    if os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    # 64-bit offsets: without argtypes ctypes would pass a C int, wrong past 2 GiB.
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    typed: Callable[[int, int, int, int], int] = function
    return typed


def batch_sync_usable(fs_type: str, release: str | None = None) -> bool:
    """Whether files on ``fs_type`` may be made durable by one ``syncfs`` instead of ``fsync``s.

    ``release`` is the kernel's (``os.uname().release`` when None).
    """
    if fs_type not in BATCH_SYNC_FS_TYPES or os.uname().sysname != "Linux":
        return False
    kernel = _kernel_release(release if release is not None else os.uname().release)
    return kernel >= _ERRORS_REPORTED_SINCE and _libc_syncfs() is not None


def syncfs(fd: int) -> None:
    """Make every dirty file of the file system holding ``fd`` durable; OSError on failure."""
    function = _libc_syncfs()
    if function is None:  # batch_sync_usable said otherwise: never reached in use
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if function(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Start writing ``nbytes`` of ``fd`` from ``offset`` to the device; whether the hint was taken.

    Only a hint, so its failure is ignored (False tells the caller to stop
    hinting that file): the ``fsync`` or ``syncfs`` that must follow is what
    proves the file durable. The hint starts the same write-back the
    kernel's flusher would start later, and an I/O error of that write-back
    is kept for the ``fsync`` and ``syncfs`` to report, because only
    ``SYNC_FILE_RANGE_WRITE`` is passed: the ``WAIT`` flags would consume the
    file's error (``file_check_and_advance_wb_err``) before its ``fsync``
    could report it, the failure PostgreSQL's "fsyncgate" was about.
    """
    function = _libc_sync_file_range()
    return function is not None and function(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0
