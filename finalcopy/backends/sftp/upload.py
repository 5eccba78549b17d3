"""The files of :meth:`~finalcopy.backends.base.Backend.put_files`, over SFTP.

How one file travels:

1. The engine's :class:`~finalcopy.backends.source.ChunkSource` is read (and
   hashed) in a worker thread, :data:`HOP_BYTES` per thread hop, the next hop
   read while the last one is sent (:meth:`Uploader._pump`); the small files
   of a batch are read whole, all in one hop (:meth:`Uploader._preload`).
2. It is read in pieces of exactly the server's ``max_write_len``, one
   SFTP write each (OpenSSH: 255 KiB), a window of them in flight
   at once, on a channel of its own where there is one; ``fsetstat``,
   ``fsync`` and ``close`` follow in the same pipeline, then ``posix-rename``
   (see :mod:`.writer`).
3. Verification hashes the committed files on the server (:mod:`.digests`).

When the connection drops (see :mod:`.connection`), the transfer reconnects,
hashes the first *k* bytes of its partial temporary file on the server
(``head -c k | b3sum``, or by reading back), compares them with the same
prefix of the source, and continues at *k* when they match; otherwise it
starts over. A later run continues a partial file that an earlier one left
behind the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from functools import partial

import anyio
import anyio.to_thread
import asyncssh

from finalcopy.backends.base import (
    READ_CHUNKS,
    Batch,
    FileTransfer,
    OnRetry,
    RetryListener,
)
from finalcopy.backends.phases import PhaseTimes
from finalcopy.backends.sftp.attrs import kind_of
from finalcopy.backends.sftp.connection import Session, limited
from finalcopy.backends.sftp.digests import ServerHashes
from finalcopy.backends.sftp.errors import is_connection_error
from finalcopy.backends.sftp.shell import parse_stdin_digest, quote
from finalcopy.backends.sftp.tree import RemoteTree
from finalcopy.backends.sftp.writer import SftpTempWriter
from finalcopy.backends.source import ChunkSource
from finalcopy.errors import DestinationError, FinalcopyError, Interrupted, SourceError
from finalcopy.hashing import ALGORITHMS, Algorithm

logger = logging.getLogger("finalcopy.sftp")

#: Files of one batch in flight at once: small files are all round trips.
FILES_IN_FLIGHT = 8
#: Smaller partial files are rewritten rather than proven and continued; smaller
#: files are read whole, a batch of them per thread hop.
RESUME_MIN = 1024 * 1024
PRELOAD_BYTES = 4 * 1024 * 1024
READER_THREADS = 4
#: Large files streaming at once, whatever the engine's job count: one or two
#: streams fill the connection, and each holds a window of buffers.
STREAMS = 2
#: Bytes a streamed file reads per worker-thread hop (while the previous hop is sent).
HOP_BYTES = 1024 * 1024


def _read_whole(sources: list[ChunkSource]) -> list[bytes | SourceError]:
    """Each source's whole content (or its read error); runs in a worker thread."""
    out: list[bytes | SourceError] = []
    for source in sources:
        chunks: list[bytes] = []
        try:
            while True:
                batch = source.read_many(READ_CHUNKS)
                chunks += batch
                # A short batch is the end of the file: asking again would not return [].
                if len(batch) < READ_CHUNKS:
                    break
        except SourceError as exc:
            out.append(exc)
            continue
        out.append(b"".join(chunks))
    return out


class Uploader:
    """Sends batches of files into ``tree``: small ones preloaded, large ones streamed."""

    def __init__(self, tree: RemoteTree, hashes: ServerHashes) -> None:
        self.tree = tree
        self.hashes = hashes
        # Few reader threads: each thread's malloc arena keeps its own high-water mark.
        self._readers = anyio.CapacityLimiter(READER_THREADS)
        self._streams = anyio.CapacityLimiter(STREAMS)

    async def put_files(
        self, transfers: Batch, algorithm: Algorithm, on_retry: OnRetry = None
    ) -> None:
        """:meth:`~finalcopy.backends.base.Backend.put_files`, pipelined on one connection."""
        interrupted = False
        contents = await self._preload(transfers)

        pending = [t for t in transfers if t.error is None]
        todo = iter(pending)

        async def worker(scope: anyio.CancelScope) -> None:
            # Workers share one iterator: a file starts as soon as one of them is free.
            nonlocal interrupted
            for transfer in todo:
                try:
                    await self._put(transfer, algorithm, contents.get(id(transfer)), on_retry)
                except Interrupted:
                    interrupted = True
                    scope.cancel()
                    return
                except FinalcopyError as exc:
                    transfer.error = exc

        async with anyio.create_task_group() as tg:
            for _ in range(min(FILES_IN_FLIGHT, len(pending))):
                tg.start_soon(worker, tg.cancel_scope)
        if interrupted:
            raise Interrupted("interrupted")
        wanted = [t for t in transfers if t.readback and t.error is None]
        if not wanted:
            return
        times = PhaseTimes()
        with contextlib.suppress(DestinationError), times.timing("verify"):
            # What fails here stays unset: the engine then calls hash_file for that file,
            # which reports the file's own error.
            await self.hashes.hash_committed(wanted, algorithm, on_retry)
        total = sum(t.source.size for t in wanted) or 1
        for transfer in wanted:  # one command hashed them all: shared out by size
            transfer.times.verify += times.verify * transfer.source.size / total

    async def _preload(self, transfers: Sequence[FileTransfer]) -> dict[int, bytes]:
        """The small files of a batch, read (and hashed) in one worker-thread hop.

        A thread hop costs more than reading a 4 KiB file, and a preloaded
        file does not wait for a stream. Keyed by ``id`` of the transfer; a
        source error is stored in the transfer instead.
        """
        small: list[FileTransfer] = []
        budget = PRELOAD_BYTES
        for transfer in transfers:
            if transfer.source.size < RESUME_MIN and transfer.source.size <= budget:
                small.append(transfer)
                budget -= transfer.source.size
        if not small:
            return {}
        results = await anyio.to_thread.run_sync(
            _read_whole, [t.source for t in small], limiter=self._readers
        )
        contents: dict[int, bytes] = {}
        for transfer, result in zip(small, results, strict=True):
            if isinstance(result, SourceError):
                transfer.error = result
            else:
                contents[id(transfer)] = result
        return contents

    async def _put(
        self,
        transfer: FileTransfer,
        algorithm: Algorithm,
        content: bytes | None,
        on_retry: RetryListener | None,
    ) -> None:
        """Copy one file (streamed, or ``content`` already read from its source).

        After a drop, reconnect and resume the partial temporary file.
        """
        first = True
        tree = self.tree
        tmp = tree.temp_of(transfer.path, transfer.temp)

        async def attempt(session: Session) -> None:
            nonlocal first
            at_start, first = first, False
            if not at_start:
                transfer.attempts += 1
            await tree.guard(session, "create", transfer.path)
            if content is not None:
                writer = await tree.open_writer(
                    session, transfer.path, tmp, 0, transfer.create_mode
                )
            else:
                writer = await self._resume_point(session, transfer, tmp, algorithm, at_start)
            try:
                with transfer.times.timing("stream"):
                    if content is not None:
                        await writer.write(content)
                    else:
                        await self._pump(writer, transfer.source)
                with transfer.times.timing("commit"):
                    transfer.dest_mtime_ns = await writer.commit(
                        mode=transfer.mode, mtime_ns=transfer.mtime_ns
                    )
            except BaseException as exc:
                if isinstance(exc, Exception) and is_connection_error(exc):
                    await writer.discard()  # keep the partial file for the next attempt
                else:
                    await writer.abort()
                raise

        copy = partial(tree.call, "copy", transfer.path, attempt, math.inf, on_retry)
        if content is not None:
            await copy()
            return
        async with self._streams:
            await copy()

    async def _resume_point(
        self,
        session: Session,
        transfer: FileTransfer,
        tmp: str,
        algorithm: Algorithm,
        first: bool,
    ) -> SftpTempWriter:
        """The temporary file to write, continued where its content is proven equal."""
        source = transfer.source
        proven = 0
        at_start = first  # the source has not been read yet
        if source.size >= RESUME_MIN:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                attrs = await limited(self.tree.link.timeout, session.control.lstat(tmp))
                size = attrs.size or 0
                if kind_of(attrs) == "file" and 0 < size <= source.size:
                    at_start = False
                    if await self._prefix_matches(session, tmp, size, source, algorithm):
                        proven = size
                    else:
                        logger.info("partial file %s differs from the source: starting over", tmp)
        writer = await self.tree.open_writer(
            session, transfer.path, tmp, proven, transfer.create_mode, stream=True
        )
        if writer.offset:
            transfer.resumed_from = max(transfer.resumed_from, writer.offset)
            logger.info("resuming '%s' at byte %d", writer.where, writer.offset)
        elif not at_start:
            try:
                await anyio.to_thread.run_sync(source.rewind, limiter=self._readers)
            except BaseException:
                # Not yet the caller's to clean up: the temporary file and its channel go here.
                with anyio.CancelScope(shield=True):
                    await writer.abort()
                raise
        return writer

    async def _prefix_matches(
        self, session: Session, tmp: str, size: int, source: ChunkSource, algorithm: Algorithm
    ) -> bool:
        """Whether the first ``size`` bytes of ``tmp`` equal the source's (then read past them)."""
        # Any algorithm the server computes will do: consume_prefix feeds the
        # copy's own hash regardless of the one it returns.
        tools = await self.tree.link.hash_tools() or {}
        names = [n for n in (algorithm.name, *ALGORITHMS) if n in tools]
        probe, remote = algorithm, None
        quoted = quote(tmp)
        if names and quoted is not None:
            probe = ALGORITHMS[names[0]]
            command = f"head -c {size} < {quoted} | {tools[probe.name]}"
            parse = partial(parse_stdin_digest, algorithm=probe)
            remote = await limited(self.hashes.time_for(size), session.run(command, parse))
        if remote is None:
            probe = algorithm
            remote = await self.hashes.read_digest(session, tmp, algorithm, size)
        await anyio.to_thread.run_sync(source.rewind, limiter=self._readers)
        local = await anyio.to_thread.run_sync(
            source.consume_prefix, size, probe, limiter=self._readers
        )
        return local == remote

    async def _pump(self, writer: SftpTempWriter, source: ChunkSource) -> None:
        """Send the rest of ``source`` through ``writer``, reading one hop ahead.

        A thread hop takes milliseconds to start on a busy machine, more than
        sending a MiB does: read in turn, the window drained at every hop. So
        the next :data:`HOP_BYTES` are read while the last are sent, and a
        read still running when the pump stops is waited for, never left to
        race a rewind.
        """
        size = writer.write_len
        want = max(1, HOP_BYTES // size)
        ahead = self._read_ahead(source, want, size)
        try:
            while True:
                pieces = await asyncio.shield(ahead)  # a cancel must not orphan the read
                # A short batch is the end of the file: asking again would not return [].
                last = len(pieces) < want
                if not last:
                    ahead = self._read_ahead(source, want, size)
                for piece in pieces:
                    await writer.write(piece)
                del pieces
                if last:
                    break
        finally:
            if not ahead.done():
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()  # retrieved: an error after a failed write is not news
        if writer.offset != source.size:
            raise SourceError(
                f"'{writer.where}' would not match its source: {source.size} bytes planned, "
                f"{writer.offset} sent"
            )

    def _read_ahead(self, source: ChunkSource, count: int, size: int) -> asyncio.Task[list[bytes]]:
        """Start reading ``count`` pieces of ``size`` bytes of ``source`` in a worker thread."""
        read = anyio.to_thread.run_sync(source.read_many, count, size, limiter=self._readers)
        return asyncio.ensure_future(read)
