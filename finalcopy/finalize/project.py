"""One project's finalization: the sequence of steps, from its lock to its deleted source.

Locks (work directory, then destination) → list and judge the project →
choose the target → room for it → journal ``copying`` → archive and copy
side by side → validate → restore archives → swap (``replace``) → durable →
record → journal ``deleting`` → drop what the copy replaced → delete the
source.

Each step either completes or leaves the project as a re-run can finish it
(:mod:`finalcopy.finalize.journal`): the source is deleted only once the
copy is verified, validated and durable, and only file by file against a
proof made in this run (:mod:`finalcopy.finalize.deletion`); a failed
project is rolled back to what the destination held before
(:mod:`finalcopy.finalize.rollback`), its source untouched.

Two locks are held from the first write to the last deletion: the work
directory's (:mod:`finalcopy.finalize.lock`) and the destination folder's
(:mod:`finalcopy.finalize.target`), which keeps out runs of other work
directories, other hosts and ``finalcopy copy``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import anyio
import anyio.to_thread

import finalcopy.finalize.logs as logs
from finalcopy.backends.base import join
from finalcopy.engine import META_DIR, CopyReport
from finalcopy.errors import FinalcopyError, Interrupted
from finalcopy.finalize.context import FinalizationContext
from finalcopy.finalize.copying import RECORD_NAME, ProjectCopy, own_files
from finalcopy.finalize.deletion import SourceDeletion
from finalcopy.finalize.destination import free_name
from finalcopy.finalize.discovery import Candidate, assess, list_project
from finalcopy.finalize.journal import JournalEntry, ProjectJournal
from finalcopy.finalize.lock import ProjectLock
from finalcopy.finalize.report import ProjectResult, now_iso
from finalcopy.finalize.rollback import Rollback
from finalcopy.finalize.swap import swap_into_place
from finalcopy.finalize.target import DestinationHold, check_space, choose_target


class ProjectFinalizer:
    """Finalize one project; :meth:`finalize` never raises for a project-level failure."""

    def __init__(self, ctx: FinalizationContext, candidate: Candidate) -> None:
        self.ctx = ctx
        self.name = candidate.name
        self.path = candidate.path
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
        self.hold = DestinationHold(ctx.output)
        self.journal = ProjectJournal(ctx.journal, self.name, ctx.output_dest, ctx.run_id)

    async def finalize(self) -> ProjectResult:
        """Lock the project in the work directory, run the steps, report how it ended."""
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
            await self.hold.while_held(self._steps)
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

    async def _release_destination(self) -> None:
        await self.hold.release()
        if self.rollback is not None and self.rollback.undone and not self.rollback.existed:
            with contextlib.suppress(FinalcopyError):
                await self.ctx.output.remove(self.rollback.target)  # only if empty

    def _skip(self, reason: str) -> ProjectResult:
        self.result.status = "skipped"
        self.result.reason = reason
        self.log.warning(f"Project '{self.name}' skipped: {reason}")
        return self.result

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.log.warning(message)

    async def _fail(self, reason: str) -> None:
        self.result.status = "failed"
        self.result.reason = reason
        self.log.error(logs.ERROR.format(p=self.name, reason=reason))
        await self._undo()
        if self.journal.failed():
            # Part of the source may be gone already: the next run must finish this
            # deletion against the same verified copy, never start a fresh copy.
            self.log.info(f"What is left of the source '{self.path}' is kept.")
        else:
            self.log.info(f"Source '{self.path}' kept.")

    async def _undo(self) -> None:
        """Roll the destination back, if this run wrote there and still holds it."""
        rollback = self.rollback
        if rollback is None:
            return
        try:
            await self.hold.check()
            problems = await rollback.undo()
        except FinalcopyError as exc:
            problems = [str(exc)]
        for problem in problems:
            self.result.warnings.append(f"rollback: {problem}")
            self.log.error(f"Rollback of '{self.name}' incomplete: {problem}")
        if not problems:
            self.log.info(f"Rolled back what this run wrote for '{self.name}'")

    # -- the steps ---------------------------------------------------------------

    async def _steps(self) -> None:
        """The sequence of the module docstring, under both locks; returns early on a skip."""
        ctx = self.ctx
        if not self.path.is_dir():
            self._skip("no longer in the work directory (finalized by another run?)")
            return
        entry = self.journal.resume_point()
        if entry is not None and entry.finishing:
            await self._finish(entry)
            return
        files = await anyio.to_thread.run_sync(list_project, self.path)
        readiness = assess(files.files, ctx.settings.mode)
        if not readiness.ready:
            self._skip(f"no longer ready: {readiness.reason}")
            return
        self.result.files, self.result.bytes = len(files.files), files.bytes
        self.result.basis = readiness.basis or ""

        self.log.info(logs.PROJECT.format(p=self.name))
        target, old = await choose_target(
            ctx.output, self.name, ctx.settings.on_existing, self.hold, self.log, entry
        )
        ctx.guard.check_destination(ctx.output, target)
        self.result.destination = ctx.output.describe(target)
        await check_space(ctx.output, target, files.files)
        self.journal.copying(target, old)

        rollback = await Rollback.snapshot(ctx.output, target, own_files(ctx.algorithm))
        self.rollback = rollback
        copying = ProjectCopy(ctx, self.path, target, rollback, self.result, self._warn)
        report = await copying.archive_and_copy(readiness.artifacts)
        await copying.validate(files.files, readiness.artifacts, report)
        if ctx.settings.restore_archives:
            await copying.restore(set(files.files))
        if old:
            aside = await free_name(ctx.output, old, "replaced")
            self.journal.swapping(target, old, aside)
            target = await self._swap(target, old, aside)
        await ctx.output.sync_dirs(["", target])
        await self._write_record(target, report)
        self.log.info(logs.COPIED.format(p=self.name, dest=self.result.destination))
        self.journal.deleting(target)
        await rollback.commit()  # the copy is final: what it replaced is not needed
        self.rollback = None
        await self._delete_source(target, report)

    async def _swap(self, target: str, old: str, aside: str) -> str:
        """``replace``: the verified copy takes the name (see :mod:`finalcopy.finalize.swap`)."""
        where, warning = await swap_into_place(self.ctx.output, self.hold, target, old, aside)
        if warning:
            self._warn(warning)
        self.result.destination = self.ctx.output.describe(where)
        return where

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

    async def _finish(self, entry: JournalEntry) -> None:
        """An earlier run stopped in the swap or the deletion: finish it, re-proving every file."""
        ctx = self.ctx
        for folder in dict.fromkeys([entry.old or entry.target, entry.target]):
            (st,) = await ctx.output.stat([folder])
            if st is not None and st.kind == "dir":
                await self.hold.acquire(folder)
        target = entry.target
        if entry.swap_pending:
            target = await self._swap(entry.target, entry.old, entry.aside)
            self.journal.deleting(target)
        self.result.destination = ctx.output.describe(target)
        self.log.info(
            f"Completing the interrupted deletion of '{self.path}' (copy verified in "
            f"'{self.result.destination}')"
        )
        with contextlib.suppress(FinalcopyError):
            await Rollback(ctx.output, target, existed=True).commit()
        await self._delete_source(target, None)

    async def _delete_source(self, target: str, report: CopyReport | None) -> None:
        """Delete each source file whose bytes this run proved equal to the destination's."""
        ctx = self.ctx
        deletion = SourceDeletion(
            source=self.path,
            output=ctx.output,
            target=target,
            guard=ctx.guard,
            hold=self.hold,
            algorithm=ctx.algorithm,
            jobs=ctx.settings.copy.jobs,
        )
        await deletion.delete(report)
        self.result.source_deleted = True
        self.log.info(logs.SOURCE_DELETED.format(src=self.path))
        self.journal.finished()
        self.result.status = "finalized"
        self.log.info(logs.PROJECT_DONE.format(p=self.name))
