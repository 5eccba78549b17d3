"""The bytes of one file on their way to a backend: :class:`ChunkSource`.

The engine provides the sources (``finalcopy.engine.source``: a local file,
hashed and counted as it is read); :class:`BytesSource` serves bytes already
in memory, for :meth:`~finalcopy.backends.base.Backend.write_bytes`.
"""

from __future__ import annotations

import threading
from typing import Protocol

from finalcopy.hashing import Algorithm

SourceOutcome = tuple[int, bool, str | None]
"""What reading a source in another process found: bytes read, whether it was read to its
end, and the digest of what was read (None until then); see :meth:`ChunkSource.adopt`."""

STOP_ELSEWHERE = threading.Event()
"""The cancel flag of every source read in a helper process (one sent there pickled): the
helper sets it when the command that sent the batch is interrupted (see
:mod:`finalcopy.backends.helpers`); it is never set in the command itself."""


class ChunkSource(Protocol):
    """The bytes of one source file, hashed and counted as they are read.

    Provided by the engine; a backend only moves what it returns. Every method
    blocks, so call them from a worker thread (``anyio.to_thread.run_sync``).
    They raise :class:`~finalcopy.errors.SourceError` on read errors and
    :class:`~finalcopy.errors.Interrupted` once the run is cancelled.
    """

    size: int
    """Size of the source file when planned."""
    done: int
    """Bytes read so far (progress polls it; where another process reads the source,
    the one that sent it there sets it as that one reports)."""

    @property
    def portable(self) -> bool:
        """Whether another process may read this source in its place (it pickles unread, and
        :meth:`adopt` takes back what was read there): a local file with nothing attached."""
        ...

    def outcome(self) -> SourceOutcome:
        """What reading this source here found, for the process that sent it (:meth:`adopt`)."""
        ...

    def adopt(self, outcome: SourceOutcome) -> None:
        """Take what reading this source in another process found (its :meth:`outcome`)."""
        ...

    def read_block(self, max_bytes: int) -> memoryview:
        """Next bytes, up to ``max_bytes``, read and hashed at once (empty at end of file).

        Valid until the next call. For a backend that writes more than a chunk
        per call: one read, one hash update and one write per block.
        """
        ...

    def read_many(self, max_chunks: int, chunk_size: int = 0) -> list[bytes]:
        """Up to ``max_chunks`` chunks as independent ``bytes``, read and hashed at once.

        Chunks of ``chunk_size`` bytes (0: the source's own chunk size), so a
        backend gets them in the size it sends (an SFTP server's largest
        write) without joining smaller ones. Fewer than ``max_chunks``
        (possibly none) means the end of the file was reached; later calls
        return an empty list.
        """
        ...

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        """Read ``length`` bytes into the streaming hash and return their own digest.

        Used to resume: the caller compares this digest with the destination's
        partial file and, if equal, writes from ``length`` on.
        """
        ...

    def rewind(self) -> None:
        """Start over from byte 0 (a resume attempt that did not match)."""
        ...


class BytesSource:
    """A :class:`ChunkSource` over bytes already in memory (:meth:`Backend.write_bytes`).

    Without a chunk size, its one chunk is all the bytes not yet read.
    """

    portable = False  # in memory: read where it is

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.done = 0

    def outcome(self) -> SourceOutcome:
        raise TypeError("bytes in memory are read where they are")

    def adopt(self, outcome: SourceOutcome) -> None:
        raise TypeError("bytes in memory are read where they are")

    def read_block(self, max_bytes: int) -> memoryview:
        start = self.done
        self.done = min(self.size, start + max(max_bytes, 1))
        return memoryview(self.data)[start : self.done]

    def read_many(self, max_chunks: int, chunk_size: int = 0) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < max_chunks and (chunk := self.read_block(chunk_size or self.size)):
            out.append(chunk.tobytes())
        return out

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        hasher = algorithm.new()
        hasher.update(self.data[:length])
        return hasher.hexdigest()

    def rewind(self) -> None:
        self.done = 0
