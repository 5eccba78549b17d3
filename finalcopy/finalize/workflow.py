"""One project: locks, space, archive, copy+validate, restore, swap, durable, delete source.

Each step either completes or leaves the project as a re-run can finish it
(see :mod:`finalcopy.finalize.journal`): the source is deleted only once the
copy is verified, validated and durable, and only file by file against a
proof made in this run (:meth:`ProjectRun._delete_source`); a failed project
is rolled back to what the destination held before
(:class:`~finalcopy.finalize.cleanup.Rollback`), its source untouched.

Two locks are held from the first write to the last deletion: the work
directory's (:mod:`finalcopy.finalize.lock`) and the destination folder's
(:mod:`finalcopy.engine.lock`), which keeps out runs of other work
directories, other hosts and ``finalcopy copy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import anyio.to_thread

from finalcopy.backends import Backend
from finalcopy.backends.base import join
from finalcopy.backends.local import hash_path
from finalcopy.engine import META_DIR, ContentInspector, CopyReport, Event, copy_tree
from finalcopy.engine.lock import HEARTBEAT_SECONDS, DestinationLock
from finalcopy.engine.manifest import NAMES_NAME, STATE_NAME
from finalcopy.engine.source import SourceIdentity
from finalcopy.errors import FinalcopyError, Interrupted
from finalcopy.finalize import logs
from finalcopy.finalize.archive import ArchiveStep
from finalcopy.finalize.artifacts import inspector_factory, validate_file
from finalcopy.finalize.changes import COARSE_NS, granularity_ns, provably_unchanged
from finalcopy.finalize.cleanup import (
    REPLACED_DIR,
    DeletionGuard,
    Rollback,
    SourceTree,
    delete_source,
    scan_source,
)
from finalcopy.finalize.destination import free_name
from finalcopy.finalize.discovery import Candidate, assess, list_project
from finalcopy.finalize.events import PipelineSink, ProjectEvent
from finalcopy.finalize.journal import Journal, JournalEntry
from finalcopy.finalize.lock import ProjectLock
from finalcopy.finalize.report import ProjectResult, now_iso
from finalcopy.finalize.settings import Settings
from finalcopy.hashing import Algorithm

MiB = 1 << 20
SPACE_MARGIN_RATIO = 0.05
SPACE_MARGIN_BYTES = 64 * MiB
RECORD_NAME = "finalize.json"
"""Written in ``<target>/.finalcopy/``: when, from where and by which run the copy was finalized."""


class ProjectFailure(FinalcopyError):
    """The project cannot be finalized; its source is kept."""


@dataclass
class RunContext:
    """What every project of a run shares."""

    settings: Settings
    output: Backend
    output_dest: str
    archives: ArchiveStep
    algorithm: Algorithm
    log: logging.Logger
    events: PipelineSink
    cancel: threading.Event
    journal: Journal
    guard: DeletionGuard
    run_id: str

    def tag(self, project: str, phase: str) -> Callable[[Event], None]:
        def sink(event: Event) -> None:
            self.events(ProjectEvent(project=project, phase=phase, event=event))

        return sink


def journal_for(settings: Settings) -> Journal:
    return Journal(settings.work_dir)


def _inspectors(
    project: str, artifacts: dict[str, str]
) -> Callable[[str], Callable[[], ContentInspector] | None]:
    def choose(rel: str) -> Callable[[], ContentInspector] | None:
        kind = artifacts.get(rel)
        return inspector_factory(kind, f"{project}/{rel}") if kind else None

    return choose


def _failures(report: CopyReport) -> str:
    items = sorted(report.failed.items())
    text = "; ".join(f"{path}: {error}" for path, error in items[:3])
    return text + (f" (and {len(items) - 3} more)" if len(items) > 3 else "")


class ProjectRun:
    """Finalize one project; :meth:`run` never raises for a project-level failure."""

    def __init__(self, ctx: RunContext, candidate: Candidate) -> None:
        self.ctx = ctx
        self.name = candidate.name
        self.path = candidate.path
        self.candidate = candidate
        self.log = ctx.log
        self.result = ProjectResult(
            name=self.name,
            status="failed",
            basis=candidate.readiness.basis or "",
            source=str(candidate.path),
            files=len(candidate.files.files),
            bytes=candidate.files.bytes,
        )
        self.rollback: Rollback | None = None
        self.locks: list[DestinationLock] = []
        self.deleting = False
        """The journal says ``deleting``: it must survive any failure from here on."""

    async def run(self) -> ProjectResult:
        started = time.monotonic()
        lock = ProjectLock(self.ctx.settings.work_dir, self.name)
        try:
            locked = await anyio.to_thread.run_sync(lock.acquire)
        except (OSError, FinalcopyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self.result.reason = f"cannot lock '{lock.path}': {reason or exc}"
            self.log.error(logs.ERROR.format(p=self.name, reason=self.result.reason))
            return self.result
        if not locked:
            return self._skip(f"another run is finalizing it (lock '{lock.path}')")
        try:
            await self._guarded()
        except Interrupted:
            self.result.status = "interrupted"
            self.result.reason = "interrupted; the source is kept and a re-run resumes the copy"
            self.log.warning(f"Project '{self.name}' interrupted: {self.result.reason}")
        except FinalcopyError as exc:
            await self._fail(str(exc))
        except OSError as exc:
            await self._fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_destination()
            await anyio.to_thread.run_sync(lock.release)
            self.result.duration = time.monotonic() - started
        return self.result

    async def _guarded(self) -> None:
        """:meth:`_locked`, with the destination locks' heartbeat running beside it."""
        outcome: list[Exception] = []

        async def body(scope: anyio.CancelScope) -> None:
            try:
                await self._locked()
            except Exception as exc:
                outcome.append(exc)
            finally:
                scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(body, tg.cancel_scope)
            tg.start_soon(self._heartbeat)
        if outcome:
            raise outcome[0]

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            for lock in list(self.locks):
                # A lost lock is reported by check() before the next destructive step.
                with contextlib.suppress(FinalcopyError):
                    await lock.refresh()

    async def _lock(self, folder: str) -> None:
        """Hold the destination folder ``folder`` (see :mod:`finalcopy.engine.lock`)."""
        lock = DestinationLock(self.ctx.output, folder, "finalcopy run")
        await lock.acquire()
        self.locks.append(lock)

    async def _release_destination(self) -> None:
        for lock in self.locks:
            with contextlib.suppress(FinalcopyError):
                await lock.release()
        self.locks.clear()
        if self.rollback is not None and self.rollback.undone and not self.rollback.existed:
            with contextlib.suppress(FinalcopyError):
                await self.ctx.output.remove(self.rollback.target)  # only if empty

    def _skip(self, reason: str) -> ProjectResult:
        self.result.status = "skipped"
        self.result.reason = reason
        self.log.warning(f"Project '{self.name}' skipped: {reason}")
        return self.result

    async def _fail(self, reason: str) -> None:
        self.result.status = "failed"
        self.result.reason = reason
        self.log.error(logs.ERROR.format(p=self.name, reason=reason))
        await self._undo()
        if self.deleting:
            # Part of the source may be gone already: the next run must finish this
            # deletion against the same verified copy, never start a fresh copy.
            self.log.info(f"What is left of the source '{self.path}' is kept.")
            return
        self.ctx.journal.remove(self.name)
        self.log.info(f"Source '{self.path}' kept.")

    async def _undo(self) -> None:
        """Roll the destination back, if this run wrote there and still holds it."""
        rollback = self.rollback
        if rollback is None:
            return
        try:
            for lock in self.locks:
                await lock.check()
            problems = await rollback.undo()
        except FinalcopyError as exc:
            problems = [str(exc)]
        for problem in problems:
            self.result.warnings.append(f"rollback: {problem}")
            self.log.error(f"Rollback of '{self.name}' incomplete: {problem}")
        if not problems:
            self.log.info(f"Rolled back what this run wrote for '{self.name}'")

    # -- the steps ---------------------------------------------------------------

    async def _locked(self) -> None:
        ctx = self.ctx
        if not self.path.is_dir():
            self._skip("no longer in the work directory (finalized by another run?)")
            return
        entry = ctx.journal.read(self.name)
        if entry is not None and entry.destination != ctx.output_dest:
            if entry.phase != "copying":
                raise ProjectFailure(
                    f"an earlier run was finishing this project on '{entry.destination}', "
                    f"which is not this run's destination; run again with "
                    f"OUTPUT_DIR={entry.destination}"
                )
            entry = None  # an interrupted copy elsewhere: start afresh here
        if entry is not None and entry.phase != "copying":
            await self._resume(entry)
            return
        files = await anyio.to_thread.run_sync(list_project, self.path)
        readiness = assess(files.files, ctx.settings.mode)
        if not readiness.ready:
            self._skip(f"no longer ready: {readiness.reason}")
            return
        self.result.files, self.result.bytes = len(files.files), files.bytes
        self.result.basis = readiness.basis or ""

        self.log.info(logs.PROJECT.format(p=self.name))
        target, old = await self._choose_target(entry)
        ctx.guard.check_destination(ctx.output, target)
        self.result.destination = ctx.output.describe(target)
        await self._check_space(target, files.files)
        ctx.journal.write(self._entry("copying", target, old))

        report = await self._archive_and_copy(target, readiness.artifacts)
        await self._validate(target, files.files, readiness.artifacts, report)
        if ctx.settings.restore_archives:
            await self._restore(target, set(files.files))
        if old:
            target = await self._swap(target, old, await free_name(ctx.output, old, "replaced"))
        await ctx.output.sync_dirs(["", target])
        await self._write_record(target, report)
        self.log.info(logs.COPIED.format(p=self.name, dest=self.result.destination))
        ctx.journal.write(self._entry("deleting", target, ""))
        self.deleting = True
        assert self.rollback is not None
        await self.rollback.commit()  # the copy is final: what it replaced is not needed
        self.rollback = None
        await self._delete_source(target, report)

    def _entry(self, phase: str, target: str, old: str, aside: str = "") -> JournalEntry:
        return JournalEntry(
            project=self.name,
            destination=self.ctx.output_dest,
            target=target,
            phase=phase,  # type: ignore[arg-type]
            run_id=self.ctx.run_id,
            old=old,
            aside=aside,
        )

    def _stored(self, target: str, rel: str) -> str:
        """Where the source file ``rel`` lives on the destination (names may be mapped)."""
        return self.ctx.output.dest_name(join(target, rel))

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.log.warning(message)

    async def _choose_target(self, entry: JournalEntry | None) -> tuple[str, str]:
        """(folder to copy into, previous copy to swap out or ""), with their locks held.

        ``OUTPUT/<project>`` is locked first when it is a real folder, so that
        the choice is made with no other run in it. A link or a file there is
        never entered: merging into it is refused, ``rename`` and ``replace``
        copy beside it (``replace`` then renames the link itself aside).
        """
        ctx = self.ctx
        here = ctx.output.describe(self.name)
        (st,) = await ctx.output.stat([self.name])
        if st is None or st.kind == "dir":
            await self._lock(self.name)
        if entry is not None:
            self.log.info(
                f"Resuming the interrupted finalization of '{self.name}' into "
                f"'{ctx.output.describe(entry.target)}'"
            )
            if entry.target != self.name:
                await self._lock(entry.target)
            return entry.target, entry.old
        (st,) = await ctx.output.stat([self.name])
        existing = st is not None and (st.kind != "dir" or await self._has_content(self.name))
        policy = ctx.settings.on_existing
        if not existing:
            return self.name, ""
        if policy == "merge":
            if st is not None and st.kind != "dir":
                raise ProjectFailure(
                    f"'{here}' is a {'symbolic link' if st.kind == 'symlink' else st.kind}, not "
                    "a folder: refusing to merge into it (use --on-existing rename or replace)"
                )
            self.log.warning(
                f"Destination '{here}' exists already: merging (files of this project replace "
                "theirs atomically, the replaced ones are kept until the copy is verified)."
            )
            return self.name, ""
        target = await free_name(ctx.output, self.name, "finalized")
        await self._lock(target)
        if policy == "rename":
            self.log.warning(
                f"Destination '{here}' exists already: this copy goes to "
                f"'{ctx.output.describe(target)}'."
            )
            return target, ""
        self.log.warning(
            f"Destination '{here}' exists already: once the new copy in "
            f"'{ctx.output.describe(target)}' is verified, it takes its name and the previous "
            f"copy is kept as '{self.name}__replaced_<date>'."
        )
        return target, self.name

    async def _has_content(self, folder: str) -> bool:
        """Whether ``folder`` holds anything besides finalcopy's lock (which we just made)."""
        lock_dir = join(folder, META_DIR)
        return any(
            path != lock_dir and not path.startswith(lock_dir + "/lock")
            for path, _ in await self.ctx.output.walk(folder)
        )

    async def _check_space(self, target: str, files: dict[str, int]) -> None:
        """Project bytes still to copy, plus 5% and 64 MiB, must fit."""
        output = self.ctx.output
        rels = sorted(files)
        stats = await output.stat([self._stored(target, rel) for rel in rels])
        needed = sum(
            files[rel]
            for rel, st in zip(rels, stats, strict=True)
            if st is None or st.size != files[rel]
        )
        if not needed:
            return
        required = int(needed * (1 + SPACE_MARGIN_RATIO)) + SPACE_MARGIN_BYTES
        free = await output.free_space(target)
        if free is not None and free < required:
            raise ProjectFailure(
                f"not enough space on '{output.describe(target)}': {needed} bytes to copy "
                f"(+5% + 64 MiB margin = {required}), {free} available"
            )

    async def _archive_and_copy(self, target: str, artifacts: dict[str, str]) -> CopyReport:
        """Archive the artifacts and copy the project side by side; both must succeed.

        Neither cancels the other: each runs to its end (or to the run's
        cancellation), then the first error, if any, is raised.
        """
        errors: list[BaseException] = []

        async def archive() -> None:
            try:
                folder, warning = await self.ctx.archives.archive(
                    self.path, self.name, sorted(artifacts)
                )
            except (FinalcopyError, OSError) as exc:
                errors.append(exc)
                return
            self.result.archive = folder
            if warning:
                self._warn(warning)

        report: CopyReport | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(archive)
            try:
                report = await self._copy(target, artifacts)
            except (FinalcopyError, OSError) as exc:
                errors.insert(0, exc)
        interrupted = [e for e in errors if isinstance(e, Interrupted)]
        if interrupted or errors:
            raise (interrupted or errors)[0]
        assert report is not None
        return report

    async def _copy(self, target: str, artifacts: dict[str, str]) -> CopyReport:
        ctx = self.ctx
        meta = [ctx.algorithm.manifest_name, STATE_NAME, NAMES_NAME, RECORD_NAME]
        self.rollback = await Rollback.snapshot(ctx.output, target, meta)
        options = replace(
            ctx.settings.copy,
            inspectors=_inspectors(self.name, artifacts),
            lock=False,  # held by this run for longer (see _choose_target)
            backup_dir=REPLACED_DIR,
        )
        report = await copy_tree(
            self.path,
            ctx.output,
            options,
            dest=target,
            events=ctx.tag(self.name, "copy"),
            cancel=ctx.cancel,
        )
        self.rollback.written.extend(report.written)
        self.result.bytes_copied = report.bytes_copied
        for warning in report.warnings:
            self._warn(warning)
        if report.interrupted:
            raise Interrupted("interrupted")
        if not report.ok:
            raise ProjectFailure(f"copy failed: {_failures(report)}")
        return report

    async def _validate(
        self, target: str, files: dict[str, int], artifacts: dict[str, str], report: CopyReport
    ) -> None:
        """DESIGN §4.5: readiness holds at the destination, hashes match, JSON parses."""
        ctx = self.ctx
        unverified = sorted(set(files) - set(report.digests))
        if unverified:
            raise ProjectFailure(
                f"{len(unverified)} file(s) have no verified copy, e.g. '{unverified[0]}'"
            )
        # Judged on the destination's own listing (under source names, in case the
        # backend stored some under mapped names).
        listed = {path for path, st in await ctx.output.walk(target) if st.kind == "file"}
        at_dest = [rel for rel in files if self._stored(target, rel) in listed]
        readiness = assess(at_dest, ctx.settings.mode)
        if not readiness.ready:
            raise ProjectFailure(f"the copy is not ready at the destination: {readiness.reason}")
        # Files the engine skipped (verified by an earlier run) did not stream this time.
        written = set(report.written)
        for rel, kind in sorted(artifacts.items()):
            if self._stored(target, rel) not in written:
                await anyio.to_thread.run_sync(
                    partial(validate_file, self.path / rel, kind, ctx.settings.copy.chunk_size)
                )

    async def _restore(self, target: str, present: set[str]) -> None:
        ctx = self.ctx
        try:
            restored, report = await ctx.archives.restore(self.name, present, ctx.output, target)
        except Interrupted:
            raise
        except FinalcopyError as exc:
            self._warn(f"Restoring the archived analyses failed: {exc}")
            return
        if report is not None and self.rollback is not None:
            self.rollback.written.extend(report.written)
        self.result.restored = restored
        if restored:
            self.log.info(
                f"{len(restored)} archived artifact(s) restored into "
                f"'{ctx.output.describe(target)}'"
            )

    async def _swap(self, target: str, old: str, aside: str) -> str:
        """``replace``: the verified new copy takes the name; the previous copy is kept aside."""
        self.ctx.journal.write(self._entry("swapping", target, old, aside))
        return await self._finish_swap(target, old, aside)

    async def _finish_swap(self, target: str, old: str, aside: str) -> str:
        """Rename ``old`` to ``aside`` (a link is moved as the link), then ``target`` to ``old``.

        Idempotent, so a re-run after a crash between the two renames finishes
        them. Returns where the copy is now. Nothing is deleted: the previous
        copy stays in ``aside`` for the operator to remove.
        """
        output = self.ctx.output
        for lock in self.locks:
            await lock.check()
        st_old, st_aside, st_target = await output.stat([old, aside, target])
        if st_target is None:
            return old  # both renames were done by an interrupted run
        try:
            if st_old is not None:
                if st_aside is not None:
                    raise ProjectFailure(f"'{output.describe(aside)}' exists already")
                await output.rename(old, aside)
                self._moved(old, aside)
            await output.rename(target, old)
            self._moved(target, old)
        except FinalcopyError as exc:
            self._warn(
                f"could not put the new copy in place of '{output.describe(old)}' ({exc}); "
                f"it stays in '{output.describe(target)}'"
            )
            return target
        self.result.destination = output.describe(old)
        self._warn(
            f"The previous copy of '{self.name}' is kept as '{output.describe(aside)}'; "
            "remove it when it is no longer needed."
        )
        return old

    def _moved(self, folder: str, new_folder: str) -> None:
        for lock in self.locks:
            lock.moved(folder, new_folder)

    async def _write_record(self, target: str, report: CopyReport) -> None:
        record = {
            "project": self.name,
            "source": str(self.path),
            "host": socket.gethostname(),
            "run_id": self.ctx.run_id,
            "finalized_at": now_iso(),
            "mode": self.ctx.settings.mode,
            "files": report.files,
            "bytes": report.bytes,
            "algorithm": report.algorithm,
        }
        data = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        await self.ctx.output.write_bytes(join(target, META_DIR, RECORD_NAME), data)

    # -- resuming after a crash ----------------------------------------------------

    async def _resume(self, entry: JournalEntry) -> None:
        """A crash interrupted the swap or the deletion: finish it, re-proving every file."""
        ctx = self.ctx
        for folder in dict.fromkeys([entry.old or entry.target, entry.target]):
            (st,) = await ctx.output.stat([folder])
            if st is not None and st.kind == "dir":
                await self._lock(folder)
        target = entry.target
        if entry.phase == "swapping":
            target = await self._finish_swap(entry.target, entry.old, entry.aside)
            ctx.journal.write(self._entry("deleting", target, ""))
        self.deleting = True
        self.result.destination = ctx.output.describe(target)
        self.log.info(
            f"Completing the interrupted deletion of '{self.path}' (copy verified in "
            f"'{self.result.destination}')"
        )
        with contextlib.suppress(FinalcopyError):
            await Rollback(ctx.output, target, existed=True).commit()
        await self._delete_source(target, None)

    # -- deleting the source -------------------------------------------------------

    async def _delete_source(self, target: str, report: CopyReport | None) -> None:
        """Delete each source file whose bytes this run proved equal to the destination's."""
        ctx = self.ctx
        output = ctx.output
        tree = await anyio.to_thread.run_sync(scan_source, self.path)
        proven = await self._prove(target, tree, report)
        link_stats = await output.stat([self._stored(target, rel) for rel in tree.links])
        links = [
            rel
            for rel, st in zip(tree.links, link_stats, strict=True)
            if st is not None and st.kind == "symlink"
        ]
        for lock in self.locks:
            await lock.check()
        kept = await anyio.to_thread.run_sync(
            delete_source, self.path, ctx.guard, proven, links, ctx.settings.copy.jobs
        )
        if kept:
            raise ProjectFailure(
                f"the copy in '{output.describe(target)}' is complete, but {len(kept)} source "
                f"item(s) were kept because they are not part of it (changed or added "
                f"meanwhile?), e.g. '{kept[0]}'; move them away, and the next run completes "
                "the deletion"
            )
        self.result.source_deleted = True
        self.log.info(logs.SOURCE_DELETED.format(src=self.path))
        ctx.journal.remove(self.name)
        self.result.status = "finalized"
        self.log.info(logs.PROJECT_DONE.format(p=self.name))

    async def _prove(
        self, target: str, tree: SourceTree, report: CopyReport | None
    ) -> dict[str, SourceIdentity]:
        """Source files proven, in this run, to hold the destination's bytes, with their identity.

        The destination side is the digest the copy read back (or re-proved) in
        this run, else the file is hashed now. The source side is the digest
        the copy streamed, if the file provably did not change since
        (:mod:`finalcopy.finalize.changes`), else the file is hashed now —
        after waiting out the file system's timestamp granularity, and between
        two identical ``lstat`` — so that a rewrite during the hash is seen.
        """
        ctx = self.ctx
        algorithm = ctx.algorithm
        margin = await anyio.to_thread.run_sync(granularity_ns, self.path)
        theirs = dict(report.proven) if report else {}
        limiter = anyio.CapacityLimiter(ctx.settings.copy.jobs)
        proven: dict[str, SourceIdentity] = {}

        async def hash_destination(rel: str) -> None:
            async with limiter:
                with contextlib.suppress(FinalcopyError):
                    theirs[rel] = await ctx.output.hash_file(self._stored(target, rel), algorithm)

        async with anyio.create_task_group() as tg:
            for rel in tree.files:
                if rel not in theirs:
                    tg.start_soon(hash_destination, rel)

        rehash: list[str] = []
        for rel, st in tree.files.items():
            seen = report.seen.get(rel) if report else None
            if report and seen and provably_unchanged(seen, st, margin):
                if report.digests.get(rel) == theirs.get(rel) is not None:
                    proven[rel] = SourceIdentity.of(st)
            elif rel in theirs:
                rehash.append(rel)
        if not rehash:
            return proven
        newest = max(max(tree.files[r].st_mtime_ns, tree.files[r].st_ctime_ns) for r in rehash)
        wait = (newest + (margin or COARSE_NS) - time.time_ns()) / 1e9
        if wait > 0:
            await anyio.sleep(wait)  # a rewrite from now on moves the timestamps

        def check(rel: str) -> None:
            path = self.path / rel
            try:
                before = SourceIdentity.of(os.lstat(path))
                digest = hash_path(path, algorithm)
                after = SourceIdentity.of(os.lstat(path))
            except OSError:
                return
            if before == after == SourceIdentity.of(tree.files[rel]) and digest == theirs[rel]:
                proven[rel] = after

        async def one(rel: str) -> None:
            async with limiter:
                await anyio.to_thread.run_sync(check, rel)

        async with anyio.create_task_group() as tg:
            for rel in rehash:
                tg.start_soon(one, rel)
        return proven
