"""Render a finalization (``finalcopy run``): the original's console lines, bars, JSON lines.

Project events bracket each project; the engine events inside a project come
wrapped in :class:`~finalcopy.finalize.events.ProjectEvent` and are handed to
the engine's renderers where they show.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.markup import escape
from rich.progress import TaskID

from finalcopy.cli.render.base import Output, Renderer, display_kind, warn
from finalcopy.cli.render.engine import JsonRenderer, PlainRenderer, QuietRenderer
from finalcopy.cli.render.progress import LiveDisplay, progress_display, task_total
from finalcopy.engine.events import BytesProgress, Event, FileFailed, Notice
from finalcopy.finalize.events import (
    FolderNotReady,
    ProjectDone,
    ProjectEvent,
    ProjectFailed,
    ProjectSkipped,
    ProjectStarted,
    RunPlanned,
)
from finalcopy.finalize.logs import CONSOLE_IN_PROGRESS, COUNT, PROJECT_DONE


def _warn_unless_logged(event: Notice, verbose: bool) -> None:
    """A run-level warning (the fallback) on stderr; with ``-v`` the echoed log shows it."""
    if event.level == "warning" and not verbose:
        warn(event.message)


def _failure(reason: str, shown: list[str]) -> str:
    """A project's failure, without repeating the file failure already printed above it."""
    return "failed (the file failure above)" if any(e and e in reason for e in shown) else reason


def _label(reason: str) -> str:
    """An interrupted project is not a failed one (the summary counts them apart)."""
    return "INTERRUPTED" if reason.startswith("interrupted") else "FAILED"


class PlainFinalizeRenderer:
    """Plain lines: the original script's console lines verbatim on stdout, as it printed
    them, then the summary; failures, progress and diagnostics on stderr."""

    def __init__(self, verbose: bool, interval: float = 10.0, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.engine = QuietRenderer() if quiet else PlainRenderer(verbose, interval=interval)
        self.shown: list[str] = []

    def __enter__(self) -> PlainFinalizeRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout.flush()

    def line(self, text: str) -> None:
        if not self.quiet:
            self.engine.line(text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.line(COUNT.format(n=len(event.projects)))
        elif isinstance(event, ProjectStarted):
            self.shown.clear()
            self.line(CONSOLE_IN_PROGRESS.format(p=event.project))
        elif isinstance(event, ProjectDone):
            self.line(PROJECT_DONE.format(p=event.project))
        elif isinstance(event, ProjectFailed):
            label = _label(event.reason)
            self.engine.note(f"{label} '{event.project}': {_failure(event.reason, self.shown)}")
        elif isinstance(event, ProjectSkipped):
            if not self.quiet:
                self.engine.note(f"skipped '{event.project}': {event.reason}")
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.engine.note(f"not ready: '{event.project}': {event.reason}")
        elif isinstance(event, ProjectEvent) and event.event is not None:
            self._engine(event.phase, event.event)
        elif isinstance(event, Notice) and not self.quiet:
            _warn_unless_logged(event, self.verbose)

    def _engine(self, phase: str, event: Event) -> None:
        # Archive and restore copies are small: only their failures and warnings show.
        if phase == "copy" or event.kind in ("file_failed", "notice", "retry"):
            self.engine(event)
        if isinstance(event, FileFailed):
            self.shown.append(event.error)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        self.engine.summary(data, lines)


class RichFinalizeRenderer(LiveDisplay):
    """On a terminal: one bar for the whole run, one for the project being finalized."""

    def __init__(self, verbose: bool, force: bool = False) -> None:
        self.verbose = verbose
        self.progress = progress_display(force=force)
        self.overall: TaskID | None = None
        self.project: TaskID | None = None
        self.before = 0
        self.done = 0
        self.total = 0
        self.out = Output(sys.stdout)
        self.shown: list[str] = []

    def _projects(self) -> str:
        return f"{self.done}/{self.total} projects"

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.print(COUNT.format(n=len(event.projects)))
            self.total = len(event.projects)
            if not event.dry_run:
                self.overall = self.progress.add_task(
                    "total", total=event.bytes, files=self._projects()
                )
        elif isinstance(event, ProjectStarted):
            self.shown.clear()
            self.print(escape(CONSOLE_IN_PROGRESS.format(p=event.project)))
            self.project = self.progress.add_task(
                escape(event.project), total=event.bytes, stage="archiving"
            )
        elif isinstance(event, ProjectDone | ProjectFailed | ProjectSkipped):
            self._project_ended(event)
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.print(f"[dim]not ready: '{escape(event.project)}': {escape(event.reason)}")
        elif isinstance(event, Notice):
            if event.level == "warning" and not self.verbose:
                self.print(f"[bold yellow]WARNING:[/bold yellow] {escape(event.message)}")
        elif isinstance(event, ProjectEvent) and event.phase == "copy":
            inner = event.event
            if isinstance(inner, BytesProgress) and self.project is not None:
                proving = inner.done >= inner.total or any(d >= n for _, d, n in inner.active)
                self.progress.update(
                    self.project,
                    completed=inner.done,
                    total=inner.total,
                    stage="verifying" if proving else "copying",
                )
                if self.overall is not None:
                    self.progress.update(self.overall, completed=self.before + inner.done)
            elif inner is not None and inner.kind == "file_failed":
                data = inner.to_dict()
                self.shown.append(str(data["error"]))
                self.print(
                    f"[red]FAILED[/red] {escape(event.project)}/{escape(str(data['path']))}: "
                    f"{escape(str(data['error']))}"
                )

    def _project_ended(self, event: ProjectDone | ProjectFailed | ProjectSkipped) -> None:
        name = escape(event.project)
        if isinstance(event, ProjectDone):
            self.print(escape(PROJECT_DONE.format(p=event.project)))
        elif isinstance(event, ProjectFailed):
            why = escape(_failure(event.reason, self.shown))
            self.print(f"[red]{_label(event.reason)}[/red] '{name}': {why}")
        else:
            self.print(f"[yellow]skipped[/yellow] '{name}': {escape(event.reason)}")
        self.done += 1
        if self.project is not None:
            size = task_total(self.progress, self.project)
            self.before += size
            if isinstance(event, ProjectDone):
                self.progress.update(self.project, completed=size, stage="done")
            self.progress.remove_task(self.project)
            self.project = None
        if self.overall is not None:
            self.progress.update(self.overall, completed=self.before, files=self._projects())

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        """Stop the display, then the summary on stdout: the last thing on screen."""
        self.finish(lines)


class JsonFinalizeRenderer:
    """JSON lines for programs: engine events tagged with project and phase, then the report."""

    def __init__(self, verbose: bool = False) -> None:
        self.json = JsonRenderer()
        self.verbose = verbose

    def __enter__(self) -> JsonFinalizeRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def __call__(self, event: Event) -> None:
        inner = event.event if isinstance(event, ProjectEvent) else None
        if isinstance(inner, BytesProgress) and self.json.throttled(inner):
            return
        self.json.emit(event.to_dict())
        if isinstance(event, Notice):
            _warn_unless_logged(event, self.verbose)  # stdout is for programs; people read stderr

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        self.json.emit(data)  # the report itself: kind finalize_report


def finalize_renderer(
    json_output: bool,
    verbose: bool,
    *,
    quiet: bool = False,
    live: bool = False,
    interval: float = 10.0,
) -> Renderer:
    """JSON lines on request, rich on a terminal (or ``-P``), the original's lines otherwise."""
    kind = display_kind(json_output, quiet, live)
    if kind == "json":
        return JsonFinalizeRenderer(verbose)
    if kind == "live":
        return RichFinalizeRenderer(verbose, force=live)
    return PlainFinalizeRenderer(verbose, interval=interval, quiet=quiet)
