"""Sending the files of a copy: batches, workers, progress, and each file's conclusion.

Concurrency is bounded twice: at most ``jobs`` batches are in flight, and each
holds at most a few chunks in memory, so peak memory depends on ``jobs`` and
``chunk_size`` only, never on file or tree size. Large files go first (so the
two ends of a run overlap well); small files travel in batches so that a
local backend handles many of them per worker-thread hop.

Each file sent is then *concluded*: verified as ``--verify`` says (content
known to be wrong never keeps a final name), recorded in the ledger, counted
and announced. A destination out of space or unusable stops the copy: the
batches not yet started are reported as not attempted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from finalcopy.backends.base import FileTransfer
from finalcopy.engine.events import BytesProgress, FileFinished, FileStarted
from finalcopy.engine.layout import Layout
from finalcopy.engine.ledger import Ledger
from finalcopy.engine.options import CopyOptions, MiB, Reporter
from finalcopy.engine.plan import PlannedFile
from finalcopy.engine.source import FileChunkSource, SourceOpener
from finalcopy.engine.state import StateRecord
from finalcopy.errors import (
    DestinationUnusable,
    FinalcopyError,
    Interrupted,
    NoSpaceError,
    VerificationError,
    unwrap_group,
)

SMALL_FILE = 1 * MiB
"""Files below this size travel in batches."""
BATCH_FILES = 64
BATCH_BYTES = 4 * MiB
PROGRESS_SECONDS = 0.1


def batches(files: Sequence[PlannedFile]) -> list[list[PlannedFile]]:
    """Large files alone, largest first; small ones grouped, in plan order."""
    large = sorted((f for f in files if f.size >= SMALL_FILE), key=lambda f: -f.size)
    out = [[f] for f in large]
    batch: list[PlannedFile] = []
    batch_bytes = 0
    for f in files:
        if f.size >= SMALL_FILE:
            continue
        batch.append(f)
        batch_bytes += f.size
        if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
            out.append(batch)
            batch, batch_bytes = [], 0
    if batch:
        out.append(batch)
    return out


class Progress:
    """Bytes handled so far (skipped, concluded, and read of the files in flight), as events."""

    def __init__(self, say: Reporter) -> None:
        self.say = say
        self.total = say.report.bytes
        self.done = 0
        """Bytes of the files skipped or concluded."""
        self.active: dict[str, FileChunkSource] = {}
        """Files being read (their ``done`` grows in worker threads)."""

    def current(self) -> int:
        """Bytes handled so far."""
        return self.done + sum(s.done for s in list(self.active.values()))

    def emit(self, last: int = -1) -> None:
        """A :class:`BytesProgress` event, unless nothing moved since ``last`` bytes."""
        done = self.current()
        if done == last:
            return
        active = tuple(
            (path, s.done, s.size) for path, s in list(self.active.items()) if s.size >= SMALL_FILE
        )
        self.say.events(BytesProgress(done=done, total=self.total, active=active))

    async def tick(self) -> None:
        """:meth:`emit` every :data:`PROGRESS_SECONDS` while bytes move, until cancelled."""
        last = -1
        while True:
            self.emit(last)
            last = self.current()
            await anyio.sleep(PROGRESS_SECONDS)


class Transfer:
    """Sends files to the backend batch by batch, and concludes each one."""

    def __init__(
        self,
        layout: Layout,
        sources: SourceOpener,
        ledger: Ledger,
        say: Reporter,
        options: CopyOptions,
    ) -> None:
        self.layout = layout
        self.backend = layout.backend
        self.sources = sources
        self.ledger = ledger
        self.say = say
        self.report = say.report
        self.options = options
        self.readback = options.verify == "readback"
        """Files are read back as they are committed (asked once, not per file)."""
        self.keep_proofs = options.keep_proofs
        self.progress = Progress(say)
        self.fatal: FinalcopyError | None = None

    async def run(
        self,
        files: Sequence[PlannedFile],
        keep_alive: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Send ``files`` until done or cancelled, running ``keep_alive`` (a lock's) meanwhile.

        On cancellation the batches in flight stop at their next chunk and
        remove their temporary files; what was concluded stays concluded.
        """
        self.progress.done = self.report.bytes - sum(f.size for f in files)
        queue = batches(files)
        send, receive = anyio.create_memory_object_stream[list[PlannedFile]](len(queue) or 1)
        for batch in queue:
            send.send_nowait(batch)
        send.close()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_cancel, tg.cancel_scope)
                tg.start_soon(self.progress.tick)
                if keep_alive is not None:
                    tg.start_soon(keep_alive)
                async with anyio.create_task_group() as workers:
                    for _ in range(min(self.options.jobs, len(queue))):
                        workers.start_soon(self._worker, receive.clone())
                    receive.close()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None

    async def _watch_cancel(self, scope: anyio.CancelScope) -> None:
        # Threads notice the flag on their next chunk; this wakes awaits that
        # are not in a thread (network I/O).
        cancel = self.sources.cancel
        while not cancel.is_set():  # noqa: ASYNC110 - a threading.Event, set from any thread
            await anyio.sleep(0.05)
        scope.cancel()

    # -- one batch ------------------------------------------------------------

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[list[PlannedFile]]) -> None:
        async with receive:
            async for batch in receive:
                if self.fatal is not None:
                    for f in batch:
                        self.say.fail(f.path, f"not attempted: {self.fatal}")
                    continue
                await self._send(batch)

    async def _send(self, batch: list[PlannedFile]) -> None:
        layout, open_source, readback = self.layout, self.sources.open, self.readback
        active = self.progress.active
        sources: list[FileChunkSource] = []
        transfers: list[FileTransfer] = []
        for f in batch:
            source = open_source(f)
            final = layout.path(f.path)
            sources.append(source)
            transfers.append(
                FileTransfer(
                    final, source, f.mode, f.mtime_ns, temp=layout.temp(final), readback=readback
                )
            )
            active[f.path] = source
            if f.size >= SMALL_FILE:
                self.say.events(FileStarted(path=f.path, size=f.size))
        try:
            await self.backend.put_files(
                transfers, self.sources.algorithm, on_retry=self.say.retried
            )
        except Interrupted:
            return
        finally:
            for f, source in zip(batch, sources, strict=True):
                source.close()
                active.pop(f.path, None)
        # Let a batch waiting for the backend start before this one is concluded (a
        # backend may send batches one at a time: the local one on tmpfs does).
        # Shielded: a cancellation here would leave committed, verified files unrecorded.
        await anyio.lowlevel.cancel_shielded_checkpoint()
        for f, source, transfer in zip(batch, sources, transfers, strict=True):
            if self._proven(source, transfer):
                self._record(f, source, transfer)
            else:
                await self._conclude(f, source, transfer)
        await self.ledger.checkpoint()

    # -- one file -------------------------------------------------------------

    def _proven(self, source: FileChunkSource, transfer: FileTransfer) -> bool:
        """Sent and verified as ``--verify`` asks, with nothing left to ask the destination.

        The common case, concluded without an await: a file read back as it
        was sent, or any file sent without ``--verify``.
        """
        if transfer.error is not None:
            return False
        if self.readback:
            return transfer.readback_digest is not None and (
                transfer.readback_digest == source.digest()
            )
        return self.options.verify == "none"

    async def _conclude(
        self, f: PlannedFile, source: FileChunkSource, transfer: FileTransfer
    ) -> None:
        """A file that failed, or whose verification needs the destination (size, hash)."""
        committed = transfer.error is None
        if committed:
            with transfer.times.timing("verify"):
                transfer.error = await self._verify(f, source, transfer)
        if transfer.error is None:
            self._record(f, source, transfer)
            return
        report = self.report
        self.progress.done += f.size
        if committed and self.keep_proofs:
            report.written.append(transfer.path)
        report.times.add(transfer.times)
        if isinstance(transfer.error, NoSpaceError | DestinationUnusable):
            self.fatal = transfer.error
        self.say.fail(f.path, str(transfer.error))

    def _record(self, f: PlannedFile, source: FileChunkSource, transfer: FileTransfer) -> None:
        """A verified file: counted, proven, in the ledger, announced."""
        report = self.report
        self.progress.done += f.size
        report.times.add(transfer.times)
        digest = source.digest()
        if self.keep_proofs:
            report.written.append(transfer.path)
            if self.readback:
                report.proven[f.path] = digest  # compared with the read-back
            if source.seen is not None:
                report.seen[f.path] = source.seen
        self.ledger.records[f.path] = StateRecord(
            f.path, f.size, f.mtime_ns, transfer.dest_mtime_ns, self.sources.algorithm.name, digest
        )
        report.copied += 1
        report.bytes_copied += f.size
        # Positional: keywords make this per-file event a quarter slower to build.
        self.say.events(
            FileFinished(f.path, f.size, digest, "resumed" if transfer.resumed_from else "copied")
        )

    async def _verify(
        self, f: PlannedFile, source: FileChunkSource, transfer: FileTransfer
    ) -> FinalcopyError | None:
        """Why the committed file cannot be trusted, or None.

        A file proven wrong is removed from its name. One whose check could
        not run (a lost connection while the server hashed it) is left there,
        most likely right, but not recorded: the copy fails, a re-run checks
        or copies it again, and ``run`` rolls it back. Removing it would leave
        nothing at a name whose previous content the rename already replaced.
        """
        backend, algorithm = self.backend, self.sources.algorithm
        mode = self.options.verify
        try:
            if mode == "readback":
                actual = transfer.readback_digest
                if actual is None:
                    actual = await backend.hash_file(transfer.path, algorithm)
                if actual != source.digest():
                    raise VerificationError(
                        f"'{backend.describe(transfer.path)}' does not match its source "
                        f"after copy ({algorithm.name} {actual} != {source.digest()})"
                    )
            elif mode == "size":
                (st,) = await backend.stat([transfer.path])
                if st is None or st.size != f.size:
                    raise VerificationError(
                        f"'{backend.describe(transfer.path)}' has the wrong size after copy"
                    )
        except VerificationError as exc:
            # A final name must not keep content we know is wrong.
            with contextlib.suppress(FinalcopyError):
                await backend.remove(transfer.path)
            return exc
        except FinalcopyError as exc:
            return exc
        return None
