"""Reading a source file: every byte handed to a backend is hashed and inspected once.

This is where validation overlaps the transfer: the same chunk feeds the
streaming hash, the content inspectors (JSON validation), the progress
counter, and then the backend's write. There is no second read of the source.

It is also where ``--bwlimit`` is charged (:mod:`.bandwidth`): every byte a
backend sends is read here first, in a worker thread, whatever the backend.
Bytes read only to be hashed (a resume prefix; :meth:`SourceOpener.digest`)
are not sent, so not charged; with no limit the read path holds ``None`` and
never calls in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from finalcopy.backends.source import STOP_ELSEWHERE, SourceOutcome
from finalcopy.engine.bandwidth import BandwidthLimiter
from finalcopy.engine.plan import PlannedFile
from finalcopy.errors import Interrupted, SourceError, source_error
from finalcopy.hashing import ALGORITHMS, Algorithm, Hasher


class ContentInspector(Protocol):
    """Checks a file's content as it streams (for example: is this valid JSON?)."""

    def feed(self, chunk: memoryview) -> None:
        """Inspect the next chunk; raise :class:`SourceError` if the content is bad."""

    def finish(self) -> None:
        """Called at end of file; raise :class:`SourceError` if the content is bad."""


InspectorChooser = Callable[[str], Callable[[], ContentInspector] | None]
"""Per relative path, a factory of the inspectors its chunks are fed to (or None)."""

_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_NOTHING = memoryview(b"")


@dataclass(frozen=True, slots=True)
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


def _content_stamps(st: os.stat_result) -> tuple[int, int, int, int]:
    """A :class:`SourceIdentity` but for ctime, which also moves when a link is added (the
    archive's staging): what must not change while a file is read. A tuple, no object."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class SourceRead:
    """How a source file looked when its copy read it: from open to end of file."""

    identity: SourceIdentity
    """``fstat`` at open; its size and mtime held until end of file, or the read was refused."""
    opened_ns: int
    """Wall clock (``time.time_ns``) just before the first byte was read."""


class FileChunkSource:
    """A :class:`~finalcopy.backends.base.ChunkSource` over one local file.

    Read with plain descriptors (``os.open``, ``os.read``/``os.readv``), not
    file objects: a file object costs an extra ``fstat`` and a few objects per
    file, which a tree of many small files pays 10,000 times. A file smaller
    than the first read asks for (a chunk, a block) is read whole in one
    ``read`` of its size plus one byte: the short read is its end, and the
    bytes are used as they come, with no buffer to allocate. Larger files are
    read into one buffer, reused, and every read asks at most for the rest of
    the file plus one byte, so the last read is short and no extra read is
    needed to see the end.
    """

    def __init__(
        self,
        path: str | Path,
        size: int,
        algorithm: Algorithm,
        chunk_size: int,
        cancel: threading.Event,
        inspector: Callable[[], ContentInspector] | None = None,
        limiter: BandwidthLimiter | None = None,
        *,
        keep_seen: bool = False,
    ) -> None:
        self.path = path
        self.size = size
        self.done = 0
        """Bytes read so far; only this object's thread writes it (progress polls it)."""
        self._algorithm = algorithm
        self._hasher: Hasher | None = None
        """Made at the first byte read, in the thread that reads (not where it is planned)."""
        self._new_inspector = inspector
        self._inspector = inspector() if inspector else None
        self._cancel = cancel
        self.limiter = limiter
        """Charged for each chunk sent (the one limiter of the invocation); None: no limit."""
        self._chunk_size = chunk_size
        self._buffer: memoryview | None = None
        """Reads of large files land here; made at the first such read, then reused."""
        self._fd = -1
        self._finished = False
        self._opened: tuple[int, int, int, int] = (0, 0, 0, 0)
        """:func:`_content_stamps` at open."""
        self._opened_ns = 0
        self._keep_seen = keep_seen
        self._sent_elsewhere = False
        """:meth:`adopt` took the outcome of another process's reading: never read here."""
        self.seen: SourceRead | None = None
        """With ``keep_seen``, set at end of file when the file did not change while it was
        read (what ``run``'s deletion relies on; a plain copy spares the objects)."""
        self._digest: str | None = None

    @property
    def portable(self) -> bool:
        # Inspectors and the bandwidth limiter live in this process, and the proofs kept
        # for run's deletion must be this process's own observation of the file.
        return (
            self._new_inspector is None
            and self.limiter is None
            and not self._keep_seen
            and self._fd < 0
            and self.done == 0
        )

    def __reduce__(self) -> tuple[Callable[..., FileChunkSource], tuple[str, int, str, int]]:
        """What another process needs to read this file: its path, size, algorithm and chunk.

        Only an unread source moves; what it read comes back by :meth:`outcome`.
        """
        if self._fd >= 0 or self.done or self._finished:
            raise TypeError(f"'{self.path}' is being read: it cannot move to another process")
        path = os.fspath(self.path)
        return _read_elsewhere, (path, self.size, self._algorithm.name, self._chunk_size)

    def outcome(self) -> SourceOutcome:
        return self.done, self._finished, self._digest

    def adopt(self, outcome: SourceOutcome) -> None:
        self.done, self._finished, self._digest = outcome
        self._sent_elsewhere = True

    def _open(self) -> int:
        try:
            self._opened_ns = time.time_ns()
            self._fd = os.open(self.path, _READ_FLAGS)
            self._opened = _content_stamps(os.fstat(self._fd))
        except OSError as exc:
            raise source_error(exc, self.path) from None
        return self._fd

    def read_chunk(self) -> memoryview:
        return self._read(self._chunk_size)

    def read_block(self, max_bytes: int) -> memoryview:
        if self.limiter is not None:
            # Blocks no larger than the limit's burst: paced, not sent a megabyte at a time.
            max_bytes = self.limiter.block(max_bytes)
        return self._read(max_bytes)

    def _read(self, limit: int, *, sent: bool = True) -> memoryview:
        """Read up to ``limit`` bytes, hash and count them; valid until the next read.

        ``sent``: the bytes go to the destination, so the bandwidth limit is charged for
        them (before they are counted, so that progress follows what the limit lets through).
        """
        if self._cancel.is_set():
            raise Interrupted("interrupted")
        if self._finished:
            if self._sent_elsewhere:
                # Read to its end there: read here it would look empty, and an empty copy
                # would replace the good one. Fails before anything is written.
                raise SourceError(f"'{self.path}' was already sent by another process")
            return _NOTHING
        fd = self._fd if self._fd >= 0 else self._open()
        # The rest of the file and one byte more: a short read is the end, so the
        # read that would return 0 is never made (one syscall less per file).
        limit = min(limit, self.size - self.done + 1)
        if limit <= 0:  # more bytes than planned were read: the file grew
            self._finish()  # raises: the size changed
            return _NOTHING
        try:
            if self.done == 0 and limit > self.size:
                chunk = memoryview(os.read(fd, limit))  # the whole file: no buffer
            else:
                view = self._view(limit)
                chunk = view[: os.readv(fd, [view])]
        except OSError as exc:
            raise source_error(exc, self.path) from None
        n = len(chunk)
        if not n:
            self._finish()
            return chunk
        hasher = self._hasher
        if hasher is None:
            hasher = self._hasher = self._algorithm.new()
        hasher.update(chunk)
        if self._inspector is not None:
            self._inspector.feed(chunk)
        if sent and self.limiter is not None:
            self.limiter.take(n, self._cancel)
        self.done += n
        if n < limit:
            self._finish()
        return chunk

    def _view(self, size: int) -> memoryview:
        """``size`` bytes of our buffer, made larger first if it is smaller."""
        if self._buffer is None or len(self._buffer) < size:
            self._buffer = memoryview(bytearray(size))
        return self._buffer[:size]

    def read_many(self, max_chunks: int, chunk_size: int = 0) -> list[bytes]:
        # One read and one hash update for the whole batch: each call into the
        # hash or the kernel gives up and retakes the GIL.
        size = chunk_size or self._chunk_size
        data = self._read(size * max_chunks)
        if not data:
            return []  # the end of the file: no chunk, not one empty chunk
        whole = data.obj
        if type(whole) is bytes and len(whole) == len(data) <= size:
            return [whole]  # a small file, read whole: its bytes as they came
        return [bytes(data[i : i + size]) for i in range(0, len(data), size)]

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        prefix_hasher = algorithm.new()
        remaining = length
        while remaining > 0:
            # Hashed to compare with the destination's partial file, not sent.
            chunk = self._read(min(remaining, self._chunk_size), sent=False)
            if not chunk:
                raise SourceError(f"'{self.path}' became shorter while being copied")
            prefix_hasher.update(chunk)
            remaining -= len(chunk)
        return prefix_hasher.hexdigest()

    def rewind(self) -> None:
        self.close()
        self._hasher = None
        self._inspector = self._new_inspector() if self._new_inspector else None
        self.done = 0
        self._finished = False
        self.seen = None
        self._digest = None

    def _finish(self) -> None:
        """End of file: check the file held still while read, then close it.

        Closing here keeps one descriptor open for a batch of small files, not one per file.
        """
        if self._finished:
            return
        self._finished = True
        try:
            assert self._fd >= 0
            now = os.fstat(self._fd)
        except OSError as exc:
            raise source_error(exc, self.path) from None
        finally:
            self.close()
        if self.done != self.size:
            raise SourceError(
                f"'{self.path}' changed size while being copied "
                f"({self.size} bytes planned, {self.done} read)"
            )
        if _content_stamps(now) != self._opened:
            raise SourceError(f"'{self.path}' was modified while being copied")
        if self._keep_seen:
            self.seen = SourceRead(SourceIdentity.of(now), self._opened_ns)
        if self._inspector is not None:
            self._inspector.finish()
        self._digest = self.digest()  # here, in the reading thread, once

    def digest(self) -> str:
        """Hash of every byte read; valid once the file was read to the end."""
        if self._digest is not None:
            return self._digest
        return (self._hasher or self._algorithm.new()).hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _read_elsewhere(path: str, size: int, algorithm: str, chunk_size: int) -> FileChunkSource:
    """A source pickled unread into another process, stopped there with its batch."""
    return FileChunkSource(path, size, ALGORITHMS[algorithm], chunk_size, STOP_ELSEWHERE)


@dataclass(frozen=True)
class SourceOpener:
    """Opens the plan's files as :class:`FileChunkSource` objects, all read alike.

    One algorithm, chunk size, cancel flag and bandwidth limiter for every
    file; the inspectors each file's chunks are fed to are chosen by its
    relative path.
    """

    prefix: str
    """The plan's :attr:`~finalcopy.engine.plan.Plan.source_prefix`: a file's local path
    is ``prefix + path``."""
    algorithm: Algorithm
    chunk_size: int
    cancel: threading.Event
    inspectors: InspectorChooser | None = None
    limiter: BandwidthLimiter | None = None
    keep_seen: bool = False
    """Each source keeps its :attr:`FileChunkSource.seen` (``run``'s proofs)."""

    def open(self, f: PlannedFile) -> FileChunkSource:
        """A source over ``f`` to send, opened at its first read."""
        return self._source(f, self.limiter)

    def _source(self, f: PlannedFile, limiter: BandwidthLimiter | None) -> FileChunkSource:
        inspector = self.inspectors(f.path) if self.inspectors else None
        return FileChunkSource(
            self.prefix + f.path,
            f.size,
            self.algorithm,
            self.chunk_size,
            self.cancel,
            inspector,
            limiter,
            keep_seen=self.keep_seen,
        )

    def digest(self, f: PlannedFile) -> str:
        """The hash of the whole of ``f`` (blocking: run it in a worker thread).

        Nothing is sent, so the bandwidth limit is not charged.
        """
        source = self._source(f, None)
        try:
            while source.read_chunk():
                pass
        finally:
            source.close()
        return source.digest()
