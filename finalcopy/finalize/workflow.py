"""One project: lock, space, archive, copy+validate, restore, swap, durable, delete source.

Each step either completes or leaves the project as a re-run can finish it
(see :mod:`finalcopy.finalize.journal`): the source is deleted only once the
copy is verified, validated and durable, and a failed project is rolled
back to what the destination held before, its source untouched.
"""

from __future__ import annotations

import json
import logging
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
from finalcopy.engine.manifest import STATE_NAME, parse_manifest, parse_state
from finalcopy.errors import FinalcopyError, Interrupted
from finalcopy.finalize import logs
from finalcopy.finalize.archive import ArchiveStep
from finalcopy.finalize.artifacts import inspector_factory, validate_file
from finalcopy.finalize.cleanup import (
    DeletionGuard,
    Rollback,
    delete_source,
    remove_tree,
    scan_source,
    unchanged_since_copy,
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
    return Journal(settings.meta_dir / "journal")


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
        self.deleting = False
        """The journal says ``deleting``: it must survive any failure from here on."""

    async def run(self) -> ProjectResult:
        started = time.monotonic()
        lock = ProjectLock(self.ctx.settings.meta_dir / "locks", self.name)
        try:
            locked = await anyio.to_thread.run_sync(lock.acquire)
        except OSError as exc:
            self.result.reason = f"cannot lock '{lock.path}': {exc.strerror or exc}"
            self.log.error(logs.ERROR.format(p=self.name, reason=self.result.reason))
            return self.result
        if not locked:
            return self._skip(f"another run is finalizing it (lock '{lock.path}')")
        try:
            await self._locked()
        except Interrupted:
            self.result.status = "interrupted"
            self.result.reason = "interrupted; the source is kept and a re-run resumes the copy"
            self.log.warning(f"Project '{self.name}' interrupted: {self.result.reason}")
        except FinalcopyError as exc:
            await self._fail(str(exc))
        except OSError as exc:
            await self._fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        finally:
            await anyio.to_thread.run_sync(lock.release)
            self.result.duration = time.monotonic() - started
        return self.result

    def _skip(self, reason: str) -> ProjectResult:
        self.result.status = "skipped"
        self.result.reason = reason
        self.log.warning(f"Project '{self.name}' skipped: {reason}")
        return self.result

    async def _fail(self, reason: str) -> None:
        self.result.status = "failed"
        self.result.reason = reason
        self.log.error(logs.ERROR.format(p=self.name, reason=reason))
        if self.rollback is not None:
            try:
                problems = await self.rollback.undo(self.ctx.guard)
            except FinalcopyError as exc:
                problems = [str(exc)]
            for problem in problems:
                self.result.warnings.append(f"rollback: {problem}")
                self.log.error(f"Rollback of '{self.name}' incomplete: {problem}")
            if not problems:
                self.log.info(f"Rolled back what this run wrote for '{self.name}'")
        if self.deleting:
            # Part of the source may be gone already: the next run must finish this
            # deletion against the same verified copy, never start a fresh copy.
            self.log.info(f"What is left of the source '{self.path}' is kept.")
            return
        self.ctx.journal.remove(self.name)
        self.log.info(f"Source '{self.path}' kept.")

    # -- the steps ---------------------------------------------------------------

    async def _locked(self) -> None:
        ctx = self.ctx
        if not self.path.is_dir():
            self._skip("no longer in the work directory (finalized by another run?)")
            return
        entry = ctx.journal.read(self.name)
        if entry is not None and entry.phase == "deleting":
            await self._resume_deletion(entry)
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
            target = await self._swap(target, old)
        await ctx.output.sync_dirs(["", target])
        await self._write_record(target, report)
        self.rollback = None  # the copy is final from here on: never roll it back
        self.log.info(logs.COPIED.format(p=self.name, dest=self.result.destination))
        ctx.journal.write(self._entry("deleting", target, ""))
        self.deleting = True
        await self._delete_source(target, report, verify=False)

    def _entry(self, phase: str, target: str, old: str) -> JournalEntry:
        return JournalEntry(
            project=self.name,
            destination=self.ctx.output_dest,
            target=target,
            phase=phase,  # type: ignore[arg-type]
            run_id=self.ctx.run_id,
            old=old,
        )

    def _stored(self, target: str, rel: str) -> str:
        """Where the source file ``rel`` lives on the destination (names may be mapped)."""
        return self.ctx.output.dest_name(join(target, rel))

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.log.warning(message)

    async def _choose_target(self, entry: JournalEntry | None) -> tuple[str, str]:
        """(folder to copy into, previous copy to swap out or "")."""
        ctx = self.ctx
        if entry is not None and entry.destination == ctx.output_dest:
            self.log.info(
                f"Resuming the interrupted finalization of '{self.name}' into "
                f"'{ctx.output.describe(entry.target)}'"
            )
            return entry.target, entry.old
        (st,) = await ctx.output.stat([self.name])
        policy = ctx.settings.on_existing
        if st is None or policy == "merge":
            if st is not None:
                self.log.warning(
                    f"Destination '{ctx.output.describe(self.name)}' exists already: merging "
                    "(files of this project replace theirs atomically, other files are kept)."
                )
            return self.name, ""
        target = await free_name(ctx.output, self.name, "finalized")
        if policy == "rename":
            self.log.warning(
                f"Destination '{ctx.output.describe(self.name)}' exists already: this copy goes "
                f"to '{ctx.output.describe(target)}'."
            )
            return target, ""
        self.log.warning(
            f"Destination '{ctx.output.describe(self.name)}' exists already: it will be replaced "
            f"once the new copy in '{ctx.output.describe(target)}' is verified."
        )
        return target, self.name

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
        self.rollback = await Rollback.snapshot(
            ctx.output, target, [ctx.algorithm.manifest_name, STATE_NAME, RECORD_NAME]
        )
        options = replace(ctx.settings.copy, inspectors=_inspectors(self.name, artifacts))
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

    async def _swap(self, target: str, old: str) -> str:
        """``replace``: remove the old copy (the new one is verified), then take its name."""
        ctx = self.ctx
        ctx.journal.write(self._entry("swapping", target, old))
        self.rollback = None  # the verified new copy must survive whatever happens now
        try:
            await remove_tree(ctx.output, ctx.guard, old)
        except FinalcopyError as exc:
            self._warn(
                f"The previous copy '{ctx.output.describe(old)}' could not be removed ({exc}); "
                f"the new copy stays in '{ctx.output.describe(target)}'."
            )
            return target
        try:
            await ctx.output.rename(target, old)
        except FinalcopyError as exc:
            self._warn(
                f"could not rename '{ctx.output.describe(target)}' ({exc}); "
                f"the new copy stays there."
            )
            return target
        self.result.destination = ctx.output.describe(old)
        ctx.journal.write(self._entry("swapping", old, ""))
        return old

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

    # -- deleting the source -------------------------------------------------------

    async def _delete_source(self, target: str, report: CopyReport | None, *, verify: bool) -> None:
        """Delete what the verified copy holds; with ``verify``, re-prove each file first."""
        ctx = self.ctx
        output = ctx.output
        manifest = await output.read_bytes(join(target, META_DIR, ctx.algorithm.manifest_name))
        state = await output.read_bytes(join(target, META_DIR, STATE_NAME))
        digests = parse_manifest(manifest) if manifest else {}
        records = parse_state(state) if state else {}
        tree = await anyio.to_thread.run_sync(scan_source, self.path)
        root = output.dest_name(target)

        def listed(rel: str) -> str | None:
            """The manifest's digest for the source file ``rel``."""
            return digests.get(self._stored(target, rel)[len(root) :].lstrip("/"))

        if verify:
            deletable = []
            for rel in sorted(tree.files):
                expected = listed(rel)
                if expected is None:
                    continue
                mine = await anyio.to_thread.run_sync(hash_path, self.path / rel, ctx.algorithm)
                try:
                    theirs = await output.hash_file(self._stored(target, rel), ctx.algorithm)
                except FinalcopyError:
                    continue
                if mine == expected == theirs:
                    deletable.append(rel)
        else:
            deletable = [
                rel
                for rel in unchanged_since_copy(tree, records)
                if listed(rel) == records[rel].digest
            ]
        link_stats = await output.stat([self._stored(target, rel) for rel in tree.links])
        links = [
            rel
            for rel, st in zip(tree.links, link_stats, strict=True)
            if st is not None and st.kind == "symlink"
        ]
        kept = await anyio.to_thread.run_sync(
            delete_source, self.path, ctx.guard, deletable, links, ctx.settings.copy.jobs
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

    async def _resume_deletion(self, entry: JournalEntry) -> None:
        """A crash interrupted the deletion of this source: finish it, re-proving every file."""
        ctx = self.ctx
        if entry.destination != ctx.output_dest:
            raise ProjectFailure(
                f"an earlier run was deleting this source after copying it to "
                f"'{entry.destination}', which is not this run's destination; "
                f"run again with OUTPUT_DIR={entry.destination}"
            )
        self.deleting = True
        self.result.destination = ctx.output.describe(entry.target)
        self.log.info(
            f"Completing the interrupted deletion of '{self.path}' (copy verified in "
            f"'{self.result.destination}')"
        )
        await self._delete_source(entry.target, None, verify=True)
