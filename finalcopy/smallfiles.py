"""Small files written whole and atomically, and read back with a size bound.

Journals, status files and reports are read while, or after, someone else
writes them: a reader (or a crash) must see the old content or the new one,
never a mix. So every write goes to a temporary name created exclusively
(``O_EXCL | O_NOFOLLOW``: whatever sits at that name is never opened through),
is flushed with ``fsync``, renamed over the final name, and the folder is
synced so the rename survives a power cut.

The ``*_at`` forms work relative to an open folder descriptor, for folders
opened without following links (:mod:`finalcopy.finalize.metadir`); the
path form opens the parent folder as the operator named it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def sync_dir(dir_fd: int) -> None:
    """Make the folder's entries durable (renames, unlinks); best effort where refused."""
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def write_atomic_at(dir_fd: int, name: str, data: bytes) -> None:
    """Replace file ``name`` of the folder ``dir_fd`` with ``data``, atomically and durably."""
    tmp = f".{name[:64]}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _CREATE, 0o644, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    sync_dir(dir_fd)


def write_atomic(path: Path, data: bytes) -> None:
    """:func:`write_atomic_at` by path; missing parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(path.parent, _FOLDER)
    try:
        write_atomic_at(dir_fd, path.name, data)
    finally:
        os.close(dir_fd)


def read_small_at(dir_fd: int, name: str, limit: int) -> bytes | None:
    """File ``name`` of the folder ``dir_fd``: at most ``limit + 1`` bytes, never through a link.

    None when it is missing, a symbolic link or not a regular file. Reading
    one byte past ``limit`` lets the caller tell an oversized file, which is
    not one it wrote, from a file of exactly ``limit`` bytes.
    """
    try:
        # O_NONBLOCK: a FIFO planted at the name must not hang the open; it is refused below.
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a planted link: not ours, never read through
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)
