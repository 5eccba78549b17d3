"""The live display of ``copy`` and ``verify`` on a terminal (rich), apart from the
plain and JSON renderers so that a pipe or a log never imports rich."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import TaskID

from finalcopy.cli.render.base import Output, human_bytes, listing_text
from finalcopy.cli.render.counts import LARGE_FILE, Counts
from finalcopy.cli.render.progress import LiveDisplay, progress_display, task_total
from finalcopy.engine import events


class RichRenderer(LiveDisplay):
    """On a terminal: the overall bar, plus one per large file in flight with its stage."""

    MAX_FILE_BARS = 6

    def __init__(
        self, verbose: bool = False, console: Console | None = None, force: bool = False
    ) -> None:
        self.verbose = verbose
        self.progress = progress_display(console, force=force)
        self.overall = self.progress.add_task("total", total=None, files="")
        self.files: dict[str, TaskID] = {}
        self.counts = Counts()
        self.out = Output(sys.stdout)

    def __call__(self, event: events.Event) -> None:
        self.counts.see(event)
        if isinstance(event, events.PlanReady):
            self.progress.update(self.overall, total=event.bytes, files=str(self.counts))
        elif isinstance(event, events.BytesProgress):
            # The files count too is drawn here (about every 0.1 s), not once per file.
            self.progress.update(
                self.overall, completed=event.done, total=event.total, files=str(self.counts)
            )
            self._update_files(event.active)
        elif isinstance(event, events.Listing):
            self.progress.update(self.overall, files=f"listing: {listing_text(event)}")
        elif isinstance(event, events.FileFailed):
            self.print(f"[red]FAILED[/red] {escape(event.path)}: {escape(event.error)}")
        elif isinstance(event, events.Notice):
            if event.level == "warning" or self.verbose:
                style = "yellow" if event.level == "warning" else "dim"
                self.print(f"[{style}]{event.level}:[/{style}] {escape(event.message)}")
        elif isinstance(event, events.Retry):
            self.print(f"[yellow]retry {event.attempt}[/yellow] {escape(event.path)}")
        elif isinstance(event, events.FileFinished):
            self._file_done(event)

    def _file_done(self, event: events.FileFinished) -> None:
        task = self.files.pop(event.path, None)
        if task is not None:
            self.progress.update(task, completed=event.size, stage="done")
            self.progress.remove_task(task)
        if self.verbose or event.size >= LARGE_FILE:
            self.print(f"[dim]{event.outcome} {escape(event.path)} ({human_bytes(event.size)})")

    def _update_files(self, active: tuple[tuple[str, int, int], ...]) -> None:
        # The engine drops a file from ``active`` before announcing it finished.
        current = {path: (done, size) for path, done, size in active[: self.MAX_FILE_BARS]}
        for path in list(self.files):
            if path not in current:
                self.progress.remove_task(self.files.pop(path))
        for path, (done, size) in current.items():
            if path not in self.files:
                name = path if len(path) <= 40 else "…" + path[-39:]
                self.files[path] = self.progress.add_task(escape(name), total=size, stage="copying")
            # The bytes are all written; the file is being proven (read back or hashed).
            stage = "verifying" if done >= size else "copying"
            self.progress.update(self.files[path], completed=done, stage=stage)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        """Stop the display (full bars when all is done), then the summary on stdout."""
        for task in list(self.files.values()):
            self.progress.remove_task(task)
        self.files.clear()
        self.progress.update(self.overall, files=str(self.counts))  # exact, for the last frame
        ok = data.get("ok") and not data.get("dry_run")
        if ok and (total := task_total(self.progress, self.overall)):
            self.progress.update(self.overall, completed=total)
        if data.get("throughput_bytes_per_s"):
            self.progress.update(self.overall, average=data["throughput_bytes_per_s"])
        self.finish(lines)
