"""Hash algorithms the engine streams through, named as the standard tools name them.

Each algorithm's manifest is readable by a standard checker: ``b3sum -c``,
``sha256sum -c`` or ``xxh128sum -c``. :func:`hash_path` hashes a local file
from the device rather than the page cache, where the OS allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3
import xxhash

from finalcopy.choices import DEFAULT_ALGORITHM as DEFAULT_ALGORITHM


class Hasher(Protocol):
    """The subset of the hashlib interface the engine uses."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class Algorithm:
    """A hash algorithm, with the command that checks its manifest."""

    name: str
    checker: str
    new: Callable[[], Hasher]

    @property
    def manifest_name(self) -> str:
        return f"manifest.{self.name}"


def _new_blake3() -> Hasher:
    # blake3-py releases the GIL for large inputs, so two copy threads hash in parallel.
    h: Hasher = blake3.blake3()
    return h


def _new_sha256() -> Hasher:
    return hashlib.sha256()


def _new_xxh128() -> Hasher:
    h: Hasher = xxhash.xxh3_128()
    return h


ALGORITHMS: dict[str, Algorithm] = {
    "blake3": Algorithm("blake3", "b3sum", _new_blake3),
    "sha256": Algorithm("sha256", "sha256sum", _new_sha256),
    "xxh128": Algorithm("xxh128", "xxh128sum", _new_xxh128),
}


def get_algorithm(name: str) -> Algorithm:
    """Look an algorithm up by name, with a clear error for unknown names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        from finalcopy.errors import UsageError

        known = ", ".join(ALGORITHMS)
        raise UsageError(f"unknown hash algorithm '{name}' (choose from {known})") from None


#: Largest read when hashing a stored file back.
READBACK_BUFFER = 256 << 10


def drop_cache(fd: int) -> None:
    """Ask the kernel to forget clean cached pages so the next read hits the device."""
    # Advisory only: some FUSE and network file systems refuse it.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def hash_fd(fd: int, size: int, algorithm: Algorithm, *, drop: bool = True) -> str:
    """Hash the file open at ``fd`` (from its start), ``size`` bytes as last seen.

    With ``drop``, from the device where the OS allows (:func:`drop_cache`);
    a memory file system (tmpfs) has no device, so its backend passes False
    and spares a useless system call per file. A file smaller than the
    buffer is read in one ``read`` of its size plus one byte (the short read
    is its end); a larger one in :data:`READBACK_BUFFER` reads into one buffer.
    """
    hasher = algorithm.new()
    if drop:
        drop_cache(fd)
    if size < READBACK_BUFFER:
        # Its size plus one byte: a short read is the end (no buffer, no extra read).
        data = os.read(fd, size + 1)
        hasher.update(data)
        if len(data) <= size:
            return hasher.hexdigest()
    view = memoryview(bytearray(READBACK_BUFFER))
    while n := os.readv(fd, [view]):
        hasher.update(view[:n])
        if n < len(view):
            break  # a short read of a regular file is its end
    return hasher.hexdigest()


def hash_path(path: str | Path, algorithm: Algorithm) -> str:
    """Hash a local file by path, bypassing the cache (see :func:`drop_cache`).

    For sources, which are reached by path; a backend reads destination
    files back through their folder's descriptor instead.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd, os.fstat(fd).st_size, algorithm)
    finally:
        os.close(fd)
