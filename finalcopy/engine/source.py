"""Reading a source file: every byte handed to a backend is hashed and inspected once.

This is where validation overlaps the transfer: the same chunk feeds the
streaming hash, the content inspectors (JSON validation), the progress
counter, and then the backend's write. There is no second read of the source.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from finalcopy.engine.plan import PlannedFile
from finalcopy.errors import Interrupted, SourceError, source_error
from finalcopy.hashing import Algorithm, Hasher


class ContentInspector(Protocol):
    """Checks a file's content as it streams (for example: is this valid JSON?)."""

    def feed(self, chunk: memoryview) -> None:
        """Inspect the next chunk; raise :class:`SourceError` if the content is bad."""

    def finish(self) -> None:
        """Called at end of file; raise :class:`SourceError` if the content is bad."""


InspectorChooser = Callable[[str], Callable[[], ContentInspector] | None]
"""Per relative path, a factory of the inspectors its chunks are fed to (or None)."""


@dataclass(frozen=True)
class SourceIdentity:
    """What the file system said about a source file: enough to notice any later write.

    ``ctime`` cannot be set by a user, so a rewrite that restores the mtime is
    still seen; ``dev``/``ino`` catch a file replaced by rename.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> SourceIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def same_content_stamps(self, other: SourceIdentity) -> bool:
        """Equal but for ctime, which also moves when a link is added (the archive's staging)."""
        return (self.dev, self.ino, self.size, self.mtime_ns) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_ns,
        )


@dataclass(frozen=True)
class SourceRead:
    """How a source file looked when its copy read it: from open to end of file."""

    identity: SourceIdentity
    """``fstat`` at open; its size and mtime held until end of file, or the read was refused."""
    opened_ns: int
    """Wall clock (``time.time_ns``) just before the first byte was read."""


class FileChunkSource:
    """A :class:`~finalcopy.backends.base.ChunkSource` over one local file."""

    def __init__(
        self,
        path: Path,
        size: int,
        algorithm: Algorithm,
        chunk_size: int,
        cancel: threading.Event,
        inspector: Callable[[], ContentInspector] | None = None,
    ) -> None:
        self.path = path
        self.size = size
        self.done = 0
        """Bytes read so far; only this object's thread writes it (progress polls it)."""
        self._algorithm = algorithm
        self._hasher: Hasher = algorithm.new()
        self._new_inspector = inspector
        self._inspector = inspector() if inspector else None
        self._cancel = cancel
        # Small files get small buffers: zeroing 64 KiB per 4 KiB file would
        # dominate a tree of many small files.
        self._chunk_size = chunk_size
        self._buffer = bytearray(max(1, min(chunk_size, size + 1)))
        self._view = memoryview(self._buffer)
        self._file: BinaryIO | None = None
        self._finished = False
        self._opened: SourceIdentity | None = None
        self._opened_ns = 0
        self.seen: SourceRead | None = None
        """Set at end of file when the file did not change while it was read."""

    def _open(self) -> BinaryIO:
        if self._file is None:
            try:
                self._opened_ns = time.time_ns()
                self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
                self._opened = SourceIdentity.of(os.fstat(self._file.fileno()))
            except OSError as exc:
                raise source_error(exc, self.path) from None
        return self._file

    def read_chunk(self) -> memoryview:
        return self._read(len(self._buffer))

    def _read(self, limit: int, into: memoryview | None = None) -> memoryview:
        """Read up to ``limit`` bytes into ``into`` (default: our buffer), hash and count them."""
        if self._cancel.is_set():
            raise Interrupted("interrupted")
        view = self._view if into is None else into
        if self._finished:
            return view[:0]
        f = self._open()
        try:
            n = f.readinto(view[:limit])  # type: ignore[attr-defined]
        except OSError as exc:
            raise source_error(exc, self.path) from None
        if not n:
            self._finish()
            return view[:0]
        chunk = view[:n]
        self._hasher.update(chunk)
        if self._inspector is not None:
            self._inspector.feed(chunk)
        self.done += n
        if n < limit:
            # A short read of a regular file is its end: skip the extra read
            # that would return 0 (one syscall less per small file).
            self._finish()
        return chunk

    def read_many(self, max_chunks: int) -> list[bytes]:
        # One read and one hash update for the whole batch: each call into the
        # hash or the kernel gives up and retakes the GIL.
        block = memoryview(bytearray(self._chunk_size * max_chunks))
        data = self._read(len(block), into=block)
        size = self._chunk_size
        return [bytes(data[i : i + size]) for i in range(0, len(data), size)]

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        prefix_hasher = algorithm.new()
        remaining = length
        while remaining > 0:
            chunk = self._read(min(remaining, len(self._buffer)))
            if not chunk:
                raise SourceError(f"'{self.path}' became shorter while being copied")
            prefix_hasher.update(chunk)
            remaining -= len(chunk)
        return prefix_hasher.hexdigest()

    def rewind(self) -> None:
        self.close()
        self._hasher = self._algorithm.new()
        self._inspector = self._new_inspector() if self._new_inspector else None
        self.done = 0
        self._finished = False
        self.seen = None

    def _finish(self) -> None:
        """End of file: check the file held still while read, then close it.

        Closing here keeps one descriptor open for a batch of small files, not one per file.
        """
        if self._finished:
            return
        self._finished = True
        try:
            assert self._file is not None and self._opened is not None
            now = SourceIdentity.of(os.fstat(self._file.fileno()))
        except OSError as exc:
            raise source_error(exc, self.path) from None
        finally:
            self.close()
        if self.done != self.size:
            raise SourceError(
                f"'{self.path}' changed size while being copied "
                f"({self.size} bytes planned, {self.done} read)"
            )
        if not now.same_content_stamps(self._opened):
            raise SourceError(f"'{self.path}' was modified while being copied")
        self.seen = SourceRead(now, self._opened_ns)
        if self._inspector is not None:
            self._inspector.finish()

    def digest(self) -> str:
        """Hash of every byte read; valid once the file was read to the end."""
        return self._hasher.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class SourceOpener:
    """Opens the plan's files as :class:`FileChunkSource` objects, all read alike.

    One algorithm, chunk size and cancel flag for every file; the inspectors
    each file's chunks are fed to are chosen by its relative path.
    """

    algorithm: Algorithm
    chunk_size: int
    cancel: threading.Event
    inspectors: InspectorChooser | None = None

    def open(self, f: PlannedFile) -> FileChunkSource:
        """A source over ``f``, opened at its first read."""
        inspector = self.inspectors(f.path) if self.inspectors else None
        return FileChunkSource(
            f.source, f.size, self.algorithm, self.chunk_size, self.cancel, inspector
        )

    def digest(self, f: PlannedFile) -> str:
        """The hash of the whole of ``f`` (blocking: run it in a worker thread)."""
        source = self.open(f)
        try:
            while source.read_chunk():
                pass
        finally:
            source.close()
        return source.digest()
