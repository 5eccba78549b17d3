"""A whole finalization of a work directory: log, destination, discovery, projects, report.

:func:`run_finalization` is the one entry point of the step (``finalcopy run``
calls it; so can a workflow service). Each ready project is handed, in
turn, to a :class:`~finalcopy.finalize.project.ProjectFinalizer`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import anyio

import finalcopy.finalize.logs as logs
from finalcopy.backends import DestinationOptions, open_backend
from finalcopy.engine import Event, Notice, discard
from finalcopy.engine.bandwidth import bwlimit_json
from finalcopy.errors import FinalcopyError
from finalcopy.finalize.archive import ArchiveStep
from finalcopy.finalize.context import FinalizationContext
from finalcopy.finalize.deletion import DeletionGuard
from finalcopy.finalize.destination import Destination, choose_destination
from finalcopy.finalize.discovery import Candidate, Readiness, discover
from finalcopy.finalize.events import (
    FolderNotReady,
    PipelineSink,
    ProjectDone,
    ProjectFailed,
    ProjectSkipped,
    ProjectStarted,
    RunPlanned,
)
from finalcopy.finalize.journal import Journal
from finalcopy.finalize.project import ProjectFinalizer
from finalcopy.finalize.report import FinalizationReport, ProjectResult, StatusFile, write_json
from finalcopy.finalize.settings import Settings
from finalcopy.hashing import get_algorithm


async def run_finalization(
    settings: Settings,
    *,
    events: PipelineSink | None = None,
    cancel: threading.Event | None = None,
) -> FinalizationReport:
    """Finalize every ready project of ``settings.work_dir``; the one entry point of the step.

    Never raises for a project's failure: read ``report.exit_code`` (0 all
    finalized or nothing to do, 1 some failed, 3 no usable destination, 130
    interrupted) and ``report.projects``. Setting ``cancel`` (from any
    thread) stops the run cleanly after the current file: temporary files
    are removed and the unfinished project keeps its source. ``events``
    receives engine events tagged with their project plus project-level
    events (:mod:`finalcopy.finalize.events`); it is called on the event
    loop and must not block.

    Example (a workflow service)::

        settings = Settings.resolve({"work_dir": Path("projets_extraits")})
        report = await run_finalization(settings)
        if report.exit_code: ...
    """
    cancel = cancel or threading.Event()
    started = time.monotonic()
    report = FinalizationReport(
        work_dir=str(settings.work_dir),
        base_dir=str(settings.base_dir),
        mode=settings.mode,
        on_existing=settings.on_existing,
        dry_run=settings.dry_run,
        archives_dir=str(settings.archives_dir),
        bwlimit=bwlimit_json(settings.copy.bwlimit),
    )
    logfile = logs.FinalizationLog(
        None if settings.dry_run else settings.log_dir,
        debug=settings.debug,
        echo=settings.verbose,
    )
    report.log_file = str(logfile.path) if logfile.path else ""
    status = StatusFile(None if settings.dry_run else settings.status_file, report)
    user_sink = [events or discard]
    log = logfile.logger

    def sink(event: Event) -> None:
        status(event)
        try:
            user_sink[0](event)
        except Exception as exc:
            # A broken listener (stdout closed under --json...) must not break the run:
            # it goes on, still logged and reported.
            user_sink[0] = discard
            log.warning(f"event listener failed, events are no longer sent to it: {exc!r}")

    if logfile.error:
        log.warning(logfile.error)
    try:
        log.info(logs.START)
        status.write(force=True)
        destination = await choose_destination(settings)
        try:
            await _finalize_projects(settings, destination, report, log, sink, cancel)
        finally:
            if destination.backend is not None:
                with anyio.CancelScope(shield=True):
                    await destination.backend.aclose()
    finally:
        report.finished_at = datetime.now().astimezone().isoformat(timespec="seconds")
        report.duration = time.monotonic() - started
        _save_reports(settings, report, logfile)
        status.close()
        if status.error:
            log.warning(status.error)
        logfile.close()
    return report


def finalize_sync(
    settings: Settings,
    *,
    events: PipelineSink | None = None,
    cancel: threading.Event | None = None,
) -> FinalizationReport:
    """:func:`run_finalization` for callers without an event loop."""

    async def main() -> FinalizationReport:
        return await run_finalization(settings, events=events, cancel=cancel)

    return anyio.run(main)


def protected_paths(settings: Settings) -> list[Path]:
    """Folders that are never projects even when they sit in the work directory."""
    paths = [
        settings.log_dir,
        settings.last_resort_output,
        settings.meta_dir,
    ]
    if settings.fallback_output is not None:
        paths.append(settings.fallback_output)
    local = settings.local_output()
    if local is not None:
        paths.append(local)
    return paths


async def _finalize_projects(
    settings: Settings,
    destination: Destination,
    report: FinalizationReport,
    log: logging.Logger,
    sink: PipelineSink,
    cancel: threading.Event,
) -> None:
    """Say where projects go (or that nothing can), discover, then finalize each ready one."""
    for note in destination.notes:
        log.warning(f"Destination not usable: {note}")
    report.destination_notes = destination.notes
    backend = destination.backend
    if backend is None:
        report.destination_unusable = True
        tried = (
            "output only: fallbacks forbidden by --no-fallback / FINALIZE_NO_FALLBACK"
            if settings.no_fallback
            else "output, FALLBACK_OUTPUT_DIR, _finalized_output"
        )
        log.critical(
            f"No usable destination ({tried}): "
            + "; ".join(destination.notes)
            + ". Nothing was touched."
        )
        return
    report.destination = backend.describe("")
    report.fallback = destination.fallback
    if destination.fallback.used:
        # Visible everywhere the operator looks: log, console (a notice event), status, report.
        log.warning(destination.fallback.message)
        sink(Notice(level="warning", message=destination.fallback.message))
    log.info(logs.DESTINATION.format(dest=report.destination))
    if backend.strategy:
        log.info(f"Destination strategy: {backend.strategy}")
    log.info(logs.SEARCHING.format(work=settings.work_dir))

    journal = Journal(settings.work_dir)
    ready = await _ready_projects(settings, journal, report, log, sink)
    if not ready:
        log.info(logs.NOTHING)
        return
    log.info(logs.COUNT.format(n=len(ready)))
    sink(
        RunPlanned(
            work_dir=str(settings.work_dir),
            destination=report.destination,
            projects=tuple(c.name for c in ready),
            bytes=sum(c.files.bytes for c in ready),
            dry_run=settings.dry_run,
        )
    )
    if settings.dry_run:
        for candidate in ready:
            report.projects.append(_planned(candidate, backend.describe(candidate.name)))
        log.info(logs.END)
        return

    algorithm = get_algorithm(settings.copy.algorithm)
    archives_backend = await open_backend(
        str(settings.archives_dir), DestinationOptions(metadata=settings.destination.metadata)
    )
    async with archives_backend:
        ctx = FinalizationContext(
            settings=settings,
            output=backend,
            output_dest=destination.dest,
            archives=ArchiveStep(
                backend=archives_backend,
                stage_root=settings.meta_dir / "stage",
                options=settings.copy,
                algorithm=algorithm,
                cancel=cancel,
            ),
            algorithm=algorithm,
            log=log,
            events=sink,
            cancel=cancel,
            journal=journal,
            guard=DeletionGuard(settings.work_dir, settings.archives_dir),
            run_id=uuid.uuid4().hex[:12],
        )
        for index, candidate in enumerate(ready, 1):
            if cancel.is_set():
                report.interrupted = True
            if report.interrupted:
                report.projects.append(
                    ProjectResult(candidate.name, "skipped", reason="not started: interrupted")
                )
                continue
            await _finalize_one(ctx, candidate, index, len(ready), report, sink)
    _tidy(settings.meta_dir)
    log.info(logs.END)
    log.info(logs.SUMMARY.format(ok=report.finalized, n=len(ready)))


async def _ready_projects(
    settings: Settings,
    journal: Journal,
    report: FinalizationReport,
    log: logging.Logger,
    sink: PipelineSink,
) -> list[Candidate]:
    """Discovery: the projects to finalize, and why each other folder is left alone.

    A project whose journal says an earlier run was finishing it is taken
    even when what is left of its source no longer looks ready.
    """
    candidates = await anyio.to_thread.run_sync(
        discover,
        settings.work_dir,
        settings.mode,
        protected_paths(settings),
        settings.archives_dir,
    )
    ready: list[Candidate] = []
    for candidate in candidates:
        try:
            finishing = not candidate.excluded and journal.finishing(candidate.name)
        except FinalcopyError as exc:
            log.error(logs.ERROR.format(p=candidate.name, reason=str(exc)))
            report.projects.append(ProjectResult(candidate.name, "failed", reason=str(exc)))
            continue
        if not candidate.ready and finishing:
            candidate.readiness = Readiness(True, None, "")
        if candidate.ready:
            ready.append(candidate)
            basis = candidate.readiness.basis
            if basis is None:
                log.info(f"Project '{candidate.name}': completing an interrupted source deletion.")
            else:
                video = basis.rsplit("/", 1)[-1]
                log.info(logs.READY.format(p=candidate.name, video=video))
        else:
            report.not_ready[candidate.name] = candidate.reason
            level = logging.INFO if settings.verbose else logging.DEBUG
            log.log(level, f"Folder '{candidate.name}' is not ready: {candidate.reason}")
            sink(FolderNotReady(project=candidate.name, reason=candidate.reason))
    for problem in journal.problems:
        log.warning(problem)
    if not settings.dry_run:
        journal.forget_stale()
    return ready


async def _finalize_one(
    ctx: FinalizationContext,
    candidate: Candidate,
    index: int,
    total: int,
    report: FinalizationReport,
    sink: PipelineSink,
) -> None:
    sink(
        ProjectStarted(
            project=candidate.name,
            index=index,
            total=total,
            bytes=candidate.files.bytes,
            basis=candidate.readiness.basis or "",
        )
    )
    result = await ProjectFinalizer(ctx, candidate).finalize()
    report.projects.append(result)
    if result.status == "finalized":
        sink(
            ProjectDone(
                project=result.name,
                destination=result.destination,
                bytes=result.bytes,
                duration=result.duration,
            )
        )
    elif result.status == "skipped":
        sink(ProjectSkipped(project=result.name, reason=result.reason))
    else:
        sink(ProjectFailed(project=result.name, reason=result.reason))
        if result.status == "interrupted":
            report.interrupted = True


def _planned(candidate: Candidate, destination: str) -> ProjectResult:
    return ProjectResult(
        name=candidate.name,
        status="planned",
        basis=candidate.readiness.basis or "",
        reason="ready; would be archived, copied, verified, then its source deleted",
        source=str(candidate.path),
        destination=destination,
        files=len(candidate.files.files),
        bytes=candidate.files.bytes,
    )


def _tidy(meta_dir: Path) -> None:
    """Remove finalcopy's own folders from the work directory once they are empty."""
    for folder in (meta_dir / "stage", meta_dir / "locks", meta_dir / "journal", meta_dir):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _save_reports(
    settings: Settings, report: FinalizationReport, logfile: logs.FinalizationLog
) -> None:
    """The report beside the log file (``finalize_*.json``) and at ``--report``."""
    data = report.to_dict()
    targets: list[Path] = []
    if logfile.path is not None:
        targets.append(logfile.path.with_suffix(".json"))
    if settings.report_path is not None:
        targets.append(settings.report_path)
    for path in targets:
        try:
            write_json(path, data)
        except OSError as exc:
            logfile.logger.warning(f"cannot write the report '{path}': {exc.strerror or exc}")
