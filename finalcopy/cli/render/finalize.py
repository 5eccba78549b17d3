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

from finalcopy.cli.render.base import Renderer, warn
from finalcopy.cli.render.engine import JsonRenderer, PlainRenderer
from finalcopy.cli.render.progress import progress_display, task_total
from finalcopy.engine.events import BytesProgress, Event, Notice
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


class PlainFinalizeRenderer:
    """Plain lines, with the original script's console lines verbatim for those who grep them."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.engine = PlainRenderer(verbose=verbose)

    def __enter__(self) -> PlainFinalizeRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.engine.line(text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.line(COUNT.format(n=len(event.projects)))
        elif isinstance(event, ProjectStarted):
            self.line(CONSOLE_IN_PROGRESS.format(p=event.project))
        elif isinstance(event, ProjectDone):
            self.line(PROJECT_DONE.format(p=event.project))
        elif isinstance(event, ProjectFailed):
            self.line(f"FAILED '{event.project}': {event.reason}")
        elif isinstance(event, ProjectSkipped):
            self.line(f"skipped '{event.project}': {event.reason}")
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.line(f"not ready: '{event.project}': {event.reason}")
        elif isinstance(event, ProjectEvent) and event.event is not None:
            self._engine(event.phase, event.event)
        elif isinstance(event, Notice):
            _warn_unless_logged(event, self.verbose)

    def _engine(self, phase: str, event: Event) -> None:
        # Archive and restore copies are small: only their failures and warnings show.
        if phase == "copy" or event.kind in ("file_failed", "notice", "retry"):
            self.engine(event)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for text in lines:
            self.line(text)


class RichFinalizeRenderer:
    """On a terminal: one bar for the whole run, one for the project being finalized."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.progress = progress_display()
        self.overall: TaskID | None = None
        self.project: TaskID | None = None
        self.before = 0

    def __enter__(self) -> RichFinalizeRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunPlanned):
            self.print(COUNT.format(n=len(event.projects)))
            if not event.dry_run:
                self.overall = self.progress.add_task("total", total=event.bytes)
        elif isinstance(event, ProjectStarted):
            self.print(CONSOLE_IN_PROGRESS.format(p=event.project))
            self.project = self.progress.add_task(event.project, total=event.bytes)
        elif isinstance(event, ProjectDone | ProjectFailed | ProjectSkipped):
            self._project_ended(event)
        elif isinstance(event, FolderNotReady):
            if self.verbose:
                self.print(f"[dim]not ready: '{event.project}': {event.reason}[/dim]")
        elif isinstance(event, Notice):
            if event.level == "warning" and not self.verbose:
                self.print(f"[bold yellow]WARNING:[/bold yellow] {escape(event.message)}")
        elif isinstance(event, ProjectEvent) and event.phase == "copy":
            inner = event.event
            if isinstance(inner, BytesProgress) and self.project is not None:
                self.progress.update(self.project, completed=inner.done, total=inner.total)
                if self.overall is not None:
                    self.progress.update(self.overall, completed=self.before + inner.done)
            elif inner is not None and inner.kind == "file_failed":
                data = inner.to_dict()
                self.print(f"[red]FAILED[/red] {event.project}/{data['path']}: {data['error']}")

    def _project_ended(self, event: ProjectDone | ProjectFailed | ProjectSkipped) -> None:
        if isinstance(event, ProjectDone):
            self.print(PROJECT_DONE.format(p=event.project))
        elif isinstance(event, ProjectFailed):
            self.print(f"[red]FAILED[/red] '{event.project}': {event.reason}")
        else:
            self.print(f"[yellow]skipped[/yellow] '{event.project}': {event.reason}")
        if self.project is not None:
            self.before += task_total(self.progress, self.project)
            self.progress.remove_task(self.project)
            self.project = None
        if self.overall is not None:
            self.progress.update(self.overall, completed=self.before)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for text in lines:
            self.print(text)


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


def finalize_renderer(json_output: bool, verbose: bool) -> Renderer:
    """Rich on a terminal, the original's plain lines otherwise, JSON lines on request."""
    if json_output:
        return JsonFinalizeRenderer(verbose)
    if sys.stderr.isatty():
        return RichFinalizeRenderer(verbose)
    return PlainFinalizeRenderer(verbose)
