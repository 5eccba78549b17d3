"""Render engine events (``copy``, ``verify``): live bars, plain lines, or JSON lines."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import TaskID

from finalcopy.cli.render.base import Output, Renderer, human_bytes
from finalcopy.cli.render.progress import progress_display
from finalcopy.engine.events import (
    BytesProgress,
    Event,
    FileFailed,
    FileFinished,
    Notice,
    PlanReady,
    Retry,
)


class JsonRenderer:
    """JSON lines on stdout for programs; progress at most twice a second, not to flood them."""

    def __init__(self, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.out = Output(out)
        self.clock = clock
        self.last_progress = 0.0

    def __enter__(self) -> JsonRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesProgress) and self.throttled(event):
            return
        self.emit(event.to_dict())

    def throttled(self, progress: BytesProgress) -> bool:
        """True for a progress event to drop: at most two a second, the last one always."""
        now = self.clock()
        if now - self.last_progress < 0.5 and progress.done != progress.total:
            return True
        self.last_progress = now
        return False

    def emit(self, data: dict[str, Any]) -> None:
        self.out.write(json.dumps(data, ensure_ascii=False) + "\n")

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        self.emit({"kind": "summary", **data})


class PlainRenderer:
    """Lines for logs and pipes, where bars would be noise: failures, files with -v, progress."""

    def __init__(
        self,
        verbose: bool = False,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 10.0,
    ) -> None:
        self.verbose = verbose
        self.out = Output(out)
        self.clock = clock
        self.interval = interval
        self.last = clock()

    def __enter__(self) -> PlainRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def line(self, text: str) -> None:
        self.out.write(text + "\n")

    def __call__(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            self.line(
                f"{event.files} file(s), {human_bytes(event.bytes)}; to copy: "
                f"{event.to_copy_files} file(s), {human_bytes(event.to_copy_bytes)}"
            )
        elif isinstance(event, FileFailed):
            self.line(f"FAILED {event.path}: {event.error}")
        elif isinstance(event, Notice):
            if event.level == "warning" or self.verbose:
                self.line(f"{event.level}: {event.message}")
        elif isinstance(event, Retry):
            self.line(f"retry {event.attempt} for {event.path}: {event.error}")
        elif isinstance(event, FileFinished) and self.verbose:
            self.line(f"{event.outcome} {event.path} ({human_bytes(event.size)})")
        elif isinstance(event, BytesProgress):
            now = self.clock()
            if now - self.last >= self.interval and event.total:
                self.last = now
                percent = 100 * event.done / event.total
                self.line(f"{percent:5.1f}% {human_bytes(event.done)} / {human_bytes(event.total)}")

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for text in lines:
            self.line(text)


class RichRenderer:
    """On a terminal: the overall bar, plus one per large file in flight to show it moves."""

    MAX_FILE_BARS = 6

    def __init__(self, verbose: bool = False, console: Console | None = None) -> None:
        self.verbose = verbose
        self.progress = progress_display(console)
        self.overall = self.progress.add_task("total", total=None)
        self.files: dict[str, TaskID] = {}

    def __enter__(self) -> RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            self.progress.update(self.overall, total=event.bytes)
        elif isinstance(event, BytesProgress):
            self.progress.update(self.overall, completed=event.done, total=event.total)
            self._update_files(event.active)
        elif isinstance(event, FileFailed):
            self.progress.console.print(f"[red]FAILED[/red] {event.path}: {event.error}")
        elif isinstance(event, Notice):
            if event.level == "warning" or self.verbose:
                style = "yellow" if event.level == "warning" else "dim"
                self.progress.console.print(f"[{style}]{event.level}:[/{style}] {event.message}")
        elif isinstance(event, Retry):
            self.progress.console.print(f"[yellow]retry {event.attempt}[/yellow] {event.path}")
        elif isinstance(event, FileFinished) and self.verbose:
            self.progress.console.print(f"{event.outcome} {event.path}", style="dim")

    def _update_files(self, active: tuple[tuple[str, int, int], ...]) -> None:
        current = {path: (done, size) for path, done, size in active[: self.MAX_FILE_BARS]}
        for path in list(self.files):
            if path not in current:
                self.progress.remove_task(self.files.pop(path))
        for path, (done, size) in current.items():
            if path not in self.files:
                name = path if len(path) <= 40 else "…" + path[-39:]
                self.files[path] = self.progress.add_task(name, total=size)
            self.progress.update(self.files[path], completed=done)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for task in list(self.files.values()):
            self.progress.remove_task(task)
        self.files.clear()
        self.progress.refresh()
        for text in lines:
            self.progress.console.print(text, highlight=False)


def engine_renderer(json_output: bool, verbose: bool) -> Renderer:
    """Rich on a terminal, plain lines otherwise, JSON lines on request."""
    if json_output:
        return JsonRenderer()
    if sys.stderr.isatty():
        return RichRenderer(verbose=verbose)
    return PlainRenderer(verbose=verbose)
