"""One project's copy into its target: archived beside it, validated, archives restored into it.

Archiving and copying run side by side and must both succeed. Every file
this copy writes is recorded in the project's
:class:`~finalcopy.finalize.rollback.Rollback`, and every destination entry
it replaces is kept in :data:`~finalcopy.finalize.rollback.REPLACED_DIR`
(``CopyOptions.backup_dir``), so that a failure puts the target back as it
was. Validation (DESIGN §4.5) judges the copy on the destination's own
listing, after the copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from finalcopy.engine import ContentInspector, CopyReport, copy_tree
from finalcopy.engine.state import NAMES_NAME, STATE_NAME
from finalcopy.errors import FinalcopyError, Interrupted, ProjectFailure
from finalcopy.finalize.artifacts import inspector_factory, validate_file
from finalcopy.finalize.context import FinalizationContext
from finalcopy.finalize.discovery import assess
from finalcopy.finalize.report import ProjectResult
from finalcopy.finalize.rollback import REPLACED_DIR, Rollback
from finalcopy.finalize.target import stored_path
from finalcopy.hashing import Algorithm

RECORD_NAME = "finalize.json"
"""Written in ``<target>/.finalcopy/``: when, from where and by which run the copy was finalized."""


def own_files(algorithm: Algorithm) -> list[str]:
    """finalcopy's files in ``<target>/.finalcopy/`` that a copy rewrites (a rollback restores)."""
    return [algorithm.manifest_name, STATE_NAME, NAMES_NAME, RECORD_NAME]


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


class ProjectCopy:
    """Copy, validate and complete one project's target; its outcome goes into ``result``."""

    def __init__(
        self,
        ctx: FinalizationContext,
        source: Path,
        target: str,
        rollback: Rollback,
        result: ProjectResult,
        warn: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.name = result.name
        self.source = source
        self.target = target
        self.rollback = rollback
        self.result = result
        self.warn = warn

    async def archive_and_copy(self, artifacts: dict[str, str]) -> CopyReport:
        """Archive the artifacts and copy the project side by side; both must succeed.

        Neither cancels the other: each runs to its end (or to the run's
        cancellation), then the first error, if any, is raised.
        """
        errors: list[BaseException] = []

        async def archive() -> None:
            try:
                folder, warning = await self.ctx.archives.archive(
                    self.source,
                    self.name,
                    sorted(artifacts),
                    self.ctx.project_events(self.name, "archive"),
                )
            except (FinalcopyError, Interrupted, OSError) as exc:
                errors.append(exc)
                return
            self.result.archive = folder
            if warning:
                self.warn(warning)

        report: CopyReport | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(archive)
            try:
                report = await self._copy(artifacts)
            except (FinalcopyError, Interrupted, OSError) as exc:
                errors.insert(0, exc)
        interrupted = [e for e in errors if isinstance(e, Interrupted)]
        if interrupted or errors:
            raise (interrupted or errors)[0]
        assert report is not None
        return report

    async def _copy(self, artifacts: dict[str, str]) -> CopyReport:
        ctx = self.ctx
        options = replace(
            ctx.settings.copy,
            inspectors=_inspectors(self.name, artifacts),
            lock=False,  # held by this finalization for longer (see target.choose_target)
            backup_dir=REPLACED_DIR,
            keep_proofs=True,  # the deletion's proofs, the rollback's list
        )
        report = await copy_tree(
            self.source,
            ctx.output,
            options,
            dest=self.target,
            events=ctx.project_events(self.name, "copy"),
            cancel=ctx.cancel,
        )
        self.rollback.written.extend(report.written)
        self.result.bytes_copied = report.bytes_copied
        for warning in report.warnings:
            self.warn(warning)
        if report.interrupted:
            raise Interrupted("interrupted")
        if not report.ok:
            raise ProjectFailure(f"copy failed: {_failures(report)}")
        return report

    async def validate(
        self, files: dict[str, int], artifacts: dict[str, str], report: CopyReport
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
        listed = {path for path, st in await ctx.output.walk(self.target) if st.kind == "file"}
        at_dest = [rel for rel in files if stored_path(ctx.output, self.target, rel) in listed]
        readiness = assess(at_dest, ctx.settings.mode)
        if not readiness.ready:
            raise ProjectFailure(f"the copy is not ready at the destination: {readiness.reason}")
        # Files the engine skipped (verified by an earlier run) did not stream this time.
        written = set(report.written)
        for rel, kind in sorted(artifacts.items()):
            if stored_path(ctx.output, self.target, rel) not in written:
                await anyio.to_thread.run_sync(
                    partial(validate_file, self.source / rel, kind, ctx.settings.copy.chunk_size)
                )

    async def restore(self, present: set[str]) -> None:
        """Copy in the archived artifacts the project lacks (``--restore-archives``)."""
        ctx = self.ctx
        try:
            restored, report = await ctx.archives.restore(
                self.name,
                present,
                ctx.output,
                self.target,
                ctx.project_events(self.name, "restore"),
            )
        except FinalcopyError as exc:
            self.warn(f"Restoring the archived analyses failed: {exc}")
            return
        if report is not None:
            self.rollback.written.extend(report.written)
        self.result.restored = restored
        if restored:
            ctx.log.info(
                f"{len(restored)} archived artifact(s) restored into "
                f"'{ctx.output.describe(self.target)}'"
            )
