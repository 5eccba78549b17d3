"""Copy a folder tree to a backend: plan, skip what is already verified, stream the rest.

Concurrency is bounded twice: at most ``jobs`` batches are in flight, and each
holds at most a few chunks in memory, so peak memory depends on ``jobs`` and
``chunk_size`` only, never on file or tree size. Large files go first (so the
two ends of a run overlap well); small files travel in batches so that a
local backend handles many of them per worker-thread hop.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from finalcopy.backends.base import Backend, FileTransfer, is_temp_name, join, temp_name
from finalcopy.engine.events import (
    BytesProgress,
    EventSink,
    FileFailed,
    FileFinished,
    FileStarted,
    Notice,
    PlanReady,
    Retry,
    discard,
)
from finalcopy.engine.lock import DestinationLock
from finalcopy.engine.manifest import (
    NAMES_NAME,
    STATE_NAME,
    StateRecord,
    format_manifest,
    format_names,
    format_state,
    parse_state,
)
from finalcopy.engine.plan import META_DIR, Plan, PlannedFile, scan
from finalcopy.engine.source import ContentInspector, FileChunkSource, SourceRead
from finalcopy.errors import (
    DestinationUnusable,
    FinalcopyError,
    Interrupted,
    NoSpaceError,
    UnsafeNameError,
    UsageError,
    VerificationError,
    unwrap_group,
)
from finalcopy.hashing import DEFAULT_ALGORITHM, Algorithm, get_algorithm

VerifyMode = Literal["readback", "size", "none"]
InspectorChooser = Callable[[str], Callable[[], ContentInspector] | None]

KiB = 1024
MiB = 1024 * KiB
SMALL_FILE = 1 * MiB
"""Files below this size travel in batches."""
BATCH_FILES = 64
BATCH_BYTES = 4 * MiB
CHECKPOINT_SECONDS = 2.0
"""How often the state file is rewritten during a run (work lost to a crash is at most this)."""
PROGRESS_SECONDS = 0.1


@dataclass(frozen=True)
class CopyOptions:
    """How to copy; every field has the CLI's default."""

    algorithm: str = DEFAULT_ALGORITHM
    chunk_size: int = 64 * KiB
    jobs: int = 4
    verify: VerifyMode = "readback"
    checksum: bool = False
    """Decide what to skip by hashing both sides instead of trusting the state file."""
    dry_run: bool = False
    inspectors: InspectorChooser | None = None
    """Per path, a factory of content inspectors fed the same chunks that are copied."""
    lock: bool = True
    """Hold the destination folder's lock (:mod:`finalcopy.engine.lock`) while copying;
    the pipeline turns it off because it holds that lock itself, for longer."""
    backup_dir: str = ""
    """When set (relative to the copy's root), a destination entry this copy would
    replace is first moved there under its own relative path, so that a caller can
    put it back (the pipeline's rollback). An entry already there is never
    overwritten: it is the oldest version, the one to restore."""

    def validate(self) -> Algorithm:
        if not 4 * KiB <= self.chunk_size <= 16 * MiB:
            raise UsageError("--chunk-size must be between 4 KiB and 16 MiB")
        if not 1 <= self.jobs <= 64:
            raise UsageError("--jobs must be between 1 and 64")
        if self.verify not in ("readback", "size", "none"):
            raise UsageError(f"unknown verify mode '{self.verify}'")
        return get_algorithm(self.algorithm)


@dataclass
class CopyReport:
    """What a copy did; ``ok`` is what the exit code reports."""

    source: str
    destination: str
    algorithm: str
    verify: str
    files: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    interrupted: bool = False
    dry_run: bool = False
    manifest: str = ""
    written: list[str] = field(default_factory=list)
    """Destination paths this run created or replaced (for rollback by the pipeline)."""
    proven: dict[str, str] = field(default_factory=dict)
    """Source path → digest of the destination's bytes, computed in this run (read back,
    hashed on the server, or re-proven for a skipped file): the only proof that counts
    before deleting a source."""
    seen: dict[str, SourceRead] = field(default_factory=dict)
    """Source path → how the source looked when this run read it (streamed files only)."""
    replaced: dict[str, str] = field(default_factory=dict)
    """Destination path → where the entry it replaced was moved (``backup_dir``)."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "algorithm": self.algorithm,
            "verify": self.verify,
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "copied": self.copied,
            "skipped": self.skipped,
            "bytes_copied": self.bytes_copied,
            "failed": self.failed,
            "warnings": self.warnings,
            "duration": round(self.duration, 3),
            "throughput_bytes_per_s": round(self.bytes_copied / self.duration)
            if self.duration > 0
            else 0,
            "interrupted": self.interrupted,
            "dry_run": self.dry_run,
            "manifest": self.manifest,
        }


def _is_inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_inside(source: Path, backend: Backend, dest: str) -> None:
    """Refuse a destination inside (or equal to) the source: it would copy itself forever."""
    if not backend.capabilities.local_path:
        return
    src = source.resolve()
    dst = Path(backend.root, dest).resolve()
    if _is_inside(dst, src):
        raise UsageError(f"destination '{dst}' is inside the source '{src}'")


class _Run:
    """State of one copy while it runs."""

    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        dest: str,
        options: CopyOptions,
        algorithm: Algorithm,
        events: EventSink,
        cancel: threading.Event,
        report: CopyReport,
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.dest = dest
        self.options = options
        self.algorithm = algorithm
        self.events = events
        self.cancel = cancel
        self.report = report
        self.records: dict[str, StateRecord] = {}
        self.active: dict[str, FileChunkSource] = {}
        self.done_bytes = 0
        self.fatal: FinalcopyError | None = None
        self.last_checkpoint = time.monotonic()
        self.lock: DestinationLock | None = None
        # Planned names that look like temporary names: no temporary file may take one.
        self.temp_like = {
            self.dest_path(path)
            for path in (*(f.path for f in plan.files), *(lk.path for lk in plan.links))
            if is_temp_name(path.rpartition("/")[2])
        }

    def dest_path(self, path: str) -> str:
        """Where ``path`` (relative to the source) is stored: names may be mapped (NTFS)."""
        return self.backend.dest_name(join(self.dest, path))

    def temp_path(self, path: str) -> str:
        """The temporary file for destination ``path``: beside it, never a planned name.

        A source may hold a file named exactly like a sibling's temporary name
        (or an interrupted copy's leftover): it is copied like any other, and
        the sibling's temporary file takes another name of the same shape.
        """
        folder, _, name = path.rpartition("/")
        salt = 0
        while (candidate := join(folder, temp_name(name, salt))) in self.temp_like:
            salt += 1
        return candidate

    def stored_name(self, path: str) -> str:
        """``path`` as stored, relative to ``dest``: what the manifest lists."""
        return self.dest_path(path)[len(self.dest_path("")) :].lstrip("/")

    # -- deciding what to skip ------------------------------------------------

    async def load_state(self) -> dict[str, StateRecord]:
        data = await self.backend.read_bytes(self.dest_path(join(META_DIR, STATE_NAME)))
        return parse_state(data) if data else {}

    async def select(self) -> list[PlannedFile]:
        """Files to copy; the others are proven present and recorded in ``records``."""
        previous = await self.load_state()
        files = self.plan.files
        if self.options.checksum:
            return await self._select_by_checksum(files)
        candidates = [
            f
            for f in files
            if (r := previous.get(f.path)) is not None
            and r.algorithm == self.algorithm.name
            and r.size == f.size
            and r.source_mtime_ns == f.mtime_ns
        ]
        stats = await self.backend.stat([self.dest_path(f.path) for f in candidates])
        hinted = [
            f
            for f, st in zip(candidates, stats, strict=True)
            if st is not None
            and st.kind == "file"
            and st.size == previous[f.path].size
            and st.mtime_ns == previous[f.path].dest_mtime_ns
        ]
        if self.options.verify == "readback":
            hinted = await self._reprove(hinted, previous)
        for f in hinted:
            self.records[f.path] = previous[f.path]
        trusted = {f.path for f in hinted}
        return [f for f in files if f.path not in trusted]

    async def _reprove(
        self, hinted: list[PlannedFile], previous: dict[str, StateRecord]
    ) -> list[PlannedFile]:
        """The hinted files whose destination bytes hash to their record's digest now.

        A state record is a hint, never a proof: it may be forged, or the file
        damaged since (bit rot, tampering, a tool restoring mtimes). Reading
        the destination back (or hashing it on the server) costs far less than
        sending it again, and keeps "verified" meaning "hashed in this run".
        """
        proven: list[PlannedFile] = []

        async def one(f: PlannedFile) -> None:
            async with limiter:
                try:
                    digest = await self.backend.hash_file(self.dest_path(f.path), self.algorithm)
                except FinalcopyError:
                    return  # copied again, which reports the destination's error if it persists
            if digest == previous[f.path].digest:
                self.report.proven[f.path] = digest
                proven.append(f)

        limiter = anyio.CapacityLimiter(self.options.jobs)
        async with anyio.create_task_group() as tg:
            for f in hinted:
                tg.start_soon(one, f)
        return proven

    async def _select_by_checksum(self, files: list[PlannedFile]) -> list[PlannedFile]:
        stats = await self.backend.stat([self.dest_path(f.path) for f in files])
        todo: list[PlannedFile] = []
        for f, st in zip(files, stats, strict=True):
            if st is None or st.kind != "file" or st.size != f.size:
                todo.append(f)
                continue
            source_digest = await anyio.to_thread.run_sync(self._hash_source, f)
            dest_digest = await self.backend.hash_file(self.dest_path(f.path), self.algorithm)
            if source_digest != dest_digest:
                todo.append(f)
                continue
            self.report.proven[f.path] = dest_digest
            self.records[f.path] = StateRecord(
                f.path, f.size, f.mtime_ns, st.mtime_ns, self.algorithm.name, source_digest
            )
        return todo

    def _hash_source(self, f: PlannedFile) -> str:
        source = self._source(f)
        try:
            while source.read_chunk():
                pass
        finally:
            source.close()
        return source.digest()

    def _source(self, f: PlannedFile) -> FileChunkSource:
        chooser = self.options.inspectors
        return FileChunkSource(
            f.source,
            f.size,
            self.algorithm,
            self.options.chunk_size,
            self.cancel,
            chooser(f.path) if chooser else None,
        )

    # -- transferring ---------------------------------------------------------

    def batches(self, files: list[PlannedFile]) -> list[list[PlannedFile]]:
        """Large files alone, largest first; small ones grouped."""
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

    async def transfer(self, batches: list[list[PlannedFile]]) -> None:
        send, receive = anyio.create_memory_object_stream[list[PlannedFile]](len(batches) or 1)
        for batch in batches:
            send.send_nowait(batch)
        send.close()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_cancel, tg.cancel_scope)
                tg.start_soon(self._tick)
                if self.lock is not None:
                    tg.start_soon(self.lock.keep_alive)
                async with anyio.create_task_group() as workers:
                    for _ in range(min(self.options.jobs, len(batches))):
                        workers.start_soon(self._worker, receive.clone())
                    receive.close()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None

    async def _watch_cancel(self, scope: anyio.CancelScope) -> None:
        # Threads notice the flag on their next chunk; this wakes awaits that
        # are not in a thread (network I/O).
        while not self.cancel.is_set():  # noqa: ASYNC110 - a threading.Event, set from any thread
            await anyio.sleep(0.05)
        scope.cancel()

    async def _tick(self) -> None:
        last = -1
        while True:
            self.emit_progress(last)
            last = self.current_bytes()
            await anyio.sleep(PROGRESS_SECONDS)

    def current_bytes(self) -> int:
        return self.done_bytes + sum(s.done for s in list(self.active.values()))

    def emit_progress(self, last: int = -1) -> None:
        done = self.current_bytes()
        if done == last:
            return
        active = tuple(
            (path, s.done, s.size) for path, s in list(self.active.items()) if s.size >= SMALL_FILE
        )
        self.events(BytesProgress(done=done, total=self.report.bytes, active=active))

    async def _worker(self, receive: anyio.abc.ObjectReceiveStream[list[PlannedFile]]) -> None:
        async with receive:
            async for batch in receive:
                if self.fatal is not None:
                    for f in batch:
                        self.fail(f.path, f"not attempted: {self.fatal}")
                    continue
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[PlannedFile]) -> None:
        transfers: list[tuple[PlannedFile, FileChunkSource, FileTransfer]] = []
        for f in batch:
            source = self._source(f)
            final = self.dest_path(f.path)
            transfer = FileTransfer(
                path=final,
                source=source,
                mode=f.mode,
                mtime_ns=f.mtime_ns,
                temp=self.temp_path(final),
                readback=self.options.verify == "readback",
            )
            transfers.append((f, source, transfer))
            self.active[f.path] = source
            if f.size >= SMALL_FILE:
                self.events(FileStarted(path=f.path, size=f.size))
        try:
            await self.backend.put_files(
                [t for _, _, t in transfers], self.algorithm, on_retry=self.retried
            )
        except Interrupted:
            return
        finally:
            for f, source, _ in transfers:
                source.close()
                self.active.pop(f.path, None)
        for f, source, transfer in transfers:
            await self._conclude(f, source, transfer)
        await self.maybe_checkpoint()

    async def _conclude(
        self, f: PlannedFile, source: FileChunkSource, transfer: FileTransfer
    ) -> None:
        self.done_bytes += f.size
        if transfer.error is None:
            self.report.written.append(transfer.path)
            transfer.error = await self._verify(f, source, transfer)
        if transfer.error is not None:
            if isinstance(transfer.error, NoSpaceError | DestinationUnusable):
                self.fatal = transfer.error
            self.fail(f.path, str(transfer.error))
            return
        digest = source.digest()
        if self.options.verify == "readback":
            self.report.proven[f.path] = digest  # _verify compared it with the read-back
        if source.seen is not None:
            self.report.seen[f.path] = source.seen
        self.records[f.path] = StateRecord(
            f.path, f.size, f.mtime_ns, transfer.dest_mtime_ns, self.algorithm.name, digest
        )
        self.report.copied += 1
        self.report.bytes_copied += f.size
        self.events(
            FileFinished(
                path=f.path,
                size=f.size,
                digest=digest,
                outcome="resumed" if transfer.resumed_from else "copied",
            )
        )

    async def _verify(
        self, f: PlannedFile, source: FileChunkSource, transfer: FileTransfer
    ) -> FinalcopyError | None:
        mode = self.options.verify
        try:
            if mode == "readback":
                actual = transfer.readback_digest
                if actual is None:
                    actual = await self.backend.hash_file(transfer.path, self.algorithm)
                if actual != source.digest():
                    raise VerificationError(
                        f"'{self.backend.describe(transfer.path)}' does not match its source "
                        f"after copy ({self.algorithm.name} {actual} != {source.digest()})"
                    )
            elif mode == "size":
                (st,) = await self.backend.stat([transfer.path])
                if st is None or st.size != f.size:
                    raise VerificationError(
                        f"'{self.backend.describe(transfer.path)}' has the wrong size after copy"
                    )
        except FinalcopyError as exc:
            # A final name must not keep content we know is wrong.
            with contextlib.suppress(FinalcopyError):
                await self.backend.remove(transfer.path)
            return exc
        return None

    def retried(self, path: str, attempt: int, error: str) -> None:
        """The backend is trying ``path`` again after ``error`` (a dropped connection)."""
        self.events(Retry(path=path, attempt=attempt, error=error))

    def fail(self, path: str, message: str) -> None:
        self.report.failed[path] = message
        self.events(FileFailed(path=path, error=message))

    async def move_aside(self, files: list[PlannedFile]) -> None:
        """``backup_dir``: move the destination entries this copy will replace into it."""
        if not self.options.backup_dir:
            return
        paths = [self.dest_path(f.path) for f in files]
        paths += [self.dest_path(link.path) for link in self.plan.links]
        stats = await self.backend.stat(paths)
        present = [p for p, st in zip(paths, stats, strict=True) if st and st.kind != "dir"]
        if not present:
            return
        root, folder = self.dest_path(""), self.dest_path(self.options.backup_dir)
        aside = {p: join(folder, p[len(root) :].lstrip("/")) for p in present}
        kept = await self.backend.stat(list(aside.values()))
        await self.backend.makedirs(sorted({posixpath.dirname(b) for b in aside.values()}))
        for (path, backup), st in zip(aside.items(), kept, strict=True):
            if st is None:
                await self.backend.rename(path, backup)
            # else: an interrupted attempt moved the original there already; what the
            # final name holds now is that attempt's copy, and the original stays put.
            self.report.replaced[path] = backup

    # -- finishing --------------------------------------------------------------

    async def maybe_checkpoint(self) -> None:
        if time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
            await self.write_state()

    async def write_state(self) -> None:
        self.last_checkpoint = time.monotonic()
        ordered = [self.records[f.path] for f in self.plan.files if f.path in self.records]
        await self.backend.write_bytes(
            self.dest_path(join(META_DIR, STATE_NAME)), format_state(ordered)
        )

    async def link_tree(self) -> None:
        """Symlinks, recreated as links (never followed)."""
        for link in self.plan.links:
            if not self.backend.capabilities.symlinks:
                self.warn(f"symlink not created (unsupported by destination): {link.path}")
                continue
            try:
                await self.backend.symlink(self.dest_path(link.path), link.target)
                self.report.written.append(self.dest_path(link.path))
            except FinalcopyError as exc:
                self.fail(link.path, str(exc))

    async def seal_tree(self) -> None:
        """Folder metadata (deepest first, after their content), then durability."""
        if self.backend.capabilities.posix_metadata:
            for d in sorted(self.plan.dirs, key=lambda d: -d.path.count("/")):
                await self.backend.set_metadata(
                    self.dest_path(d.path), mode=d.mode | 0o700, mtime_ns=d.mtime_ns
                )
        await self.backend.sync_dirs(
            [self.dest_path(d.path) for d in self.plan.dirs] + [self.dest_path(META_DIR)]
        )

    async def write_manifest(self) -> str:
        self.report.digests = {path: r.digest for path, r in self.records.items()}
        digests = {self.stored_name(path): r.digest for path, r in self.records.items()}
        path = self.dest_path(join(META_DIR, self.algorithm.manifest_name))
        await self.backend.write_bytes(
            path, format_manifest(digests, algorithm=self.algorithm.name)
        )
        await self.write_names()
        await self.write_state()
        return self.backend.describe(path)

    async def write_names(self) -> None:
        """Record ``original<TAB>stored`` for every path the backend stored under another name."""
        plan = self.plan
        every = [
            *(d.path for d in plan.dirs if d.path),
            *(f.path for f in plan.files),
            *(lk.path for lk in plan.links),
        ]
        renamed = {p: s for p in every if (s := self.stored_name(p)) != p}
        if renamed:
            await self.backend.write_bytes(
                self.dest_path(join(META_DIR, NAMES_NAME)), format_names(renamed)
            )

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)
        self.events(Notice(level="warning", message=message))


async def copy_tree(
    source: Path,
    backend: Backend,
    options: CopyOptions | None = None,
    *,
    dest: str = "",
    events: EventSink = discard,
    cancel: threading.Event | None = None,
) -> CopyReport:
    """Copy the folder ``source`` to ``dest`` (relative to the backend's root).

    Returns a report rather than raising for per-file failures; raises
    :class:`~finalcopy.errors.FinalcopyError` when nothing can be copied at all
    (unreadable source, unusable destination, unsafe names, no space).
    Setting ``cancel`` stops the copy cleanly: temporary files are removed,
    what was committed is recorded so a re-run skips it, and the report says
    ``interrupted``.
    """
    options = options or CopyOptions()
    algorithm = options.validate()
    cancel = cancel or threading.Event()
    started = time.monotonic()
    report = CopyReport(
        source=str(source),
        destination=backend.describe(dest),
        algorithm=algorithm.name,
        verify=options.verify,
        dry_run=options.dry_run,
    )
    plan = await anyio.to_thread.run_sync(scan, source)
    check_not_inside(source, backend, dest)
    report.files, report.bytes = len(plan.files), plan.total_bytes
    run = _Run(plan, backend, dest, options, algorithm, events, cancel, report)
    if backend.strategy:
        events(Notice(message=f"destination strategy: {backend.strategy}"))
    for message in plan.skipped:
        run.warn(message)
    for path, message in plan.unreadable:
        run.fail(path, message)

    every_path = [d.path for d in plan.dirs if d.path] + [f.path for f in plan.files]
    problems = backend.name_problems(
        [join(dest, p) for p in every_path + [lk.path for lk in plan.links]]
    )
    if problems:
        raise UnsafeNameError(problems)

    if not options.dry_run:
        await backend.prepare()
    todo = await run.select()
    todo_bytes = sum(f.size for f in todo)
    report.skipped = len(plan.files) - len(todo)
    run.done_bytes = report.bytes - todo_bytes
    events(
        PlanReady(
            files=len(plan.files),
            bytes=report.bytes,
            to_copy_files=len(todo),
            to_copy_bytes=todo_bytes,
        )
    )
    skipped_paths = {f.path for f in plan.files} - {f.path for f in todo}
    for f in plan.files:
        if f.path in skipped_paths:
            events(
                FileFinished(
                    path=f.path, size=f.size, digest=run.records[f.path].digest, outcome="skipped"
                )
            )
    if options.dry_run:
        report.duration = time.monotonic() - started
        return report

    free = await backend.free_space(dest)
    if free is not None and todo_bytes > free:
        raise NoSpaceError(
            f"not enough space on '{backend.describe(dest)}': {todo_bytes} bytes to copy, "
            f"{free} available"
        )
    if options.lock:
        run.lock = DestinationLock(backend, dest, "copy")
        await run.lock.acquire()
    try:
        await _copy_files(run, todo)
    finally:
        if run.lock is not None:
            with anyio.CancelScope(shield=True):
                await run.lock.release()
    run.emit_progress()
    report.duration = time.monotonic() - started
    return report


async def _copy_files(run: _Run, todo: list[PlannedFile]) -> None:
    """Create the folders, move replaced entries aside, stream the files, seal the tree."""
    backend, report = run.backend, run.report
    await backend.makedirs([run.dest_path(d.path) for d in run.plan.dirs])
    try:
        await run.move_aside(todo)
        await run.transfer(run.batches(todo))
        if run.cancel.is_set():
            raise Interrupted("interrupted")
        await run.link_tree()
        report.manifest = await run.write_manifest()
        await run.seal_tree()
    except Interrupted:
        report.interrupted = True
        with anyio.CancelScope(shield=True):
            await run.write_state()
