"""Render engine events (``copy``, ``verify``): live bars, plain lines, or JSON lines.

Streams: the summary goes to **stdout**, after the live display has stopped,
so it is the last thing on screen and ``finalcopy copy … | tee log`` keeps it;
progress and diagnostics go to **stderr**. With ``--json`` stdout carries the
JSON lines instead (docs/json.md).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import TaskID

from finalcopy.cli.render.base import Output, Renderer, display_kind, human_bytes
from finalcopy.cli.render.progress import LiveDisplay, progress_display, task_total
from finalcopy.engine.events import (
    BytesProgress,
    Event,
    FileFailed,
    FileFinished,
    Notice,
    PlanReady,
    Retry,
)

LARGE_FILE = 1 << 20
"""Files from this size get a line when they finish (and a bar while in flight)."""


def timestamp(clock: Callable[[], float] = time.time) -> str:
    """Now, as JSON events carry it: ISO 8601 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(clock(), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Counts:
    """Files done out of the plan, counted from the events (small files included)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def see(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            self.total = event.files
        elif isinstance(event, FileFinished | FileFailed):
            self.done += 1

    def __str__(self) -> str:
        return f"{self.done}/{self.total} files" if self.total else ""


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
        data.setdefault("time", timestamp())
        self.out.write(json.dumps(data, ensure_ascii=False) + "\n")

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        self.emit({"kind": "summary", **data})


class PlainRenderer:
    """Lines for logs and pipes, where bars would be noise.

    On stderr: failures, warnings, a line per finished large file (every file
    with -v), a progress line every ``interval`` seconds (0: none). On stdout:
    the summary.
    """

    def __init__(
        self,
        verbose: bool = False,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 10.0,
        err: TextIO | None = None,
    ) -> None:
        self.verbose = verbose
        self.out = Output(out)
        self.err = Output(err or sys.stderr)
        self.clock = clock
        self.interval = interval
        self.started = self.last = clock()
        self.counts = Counts()

    def __enter__(self) -> PlainRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def line(self, text: str) -> None:
        """A line of the summary (stdout)."""
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """A progress or diagnostic line (stderr)."""
        self.err.write(text + "\n")

    def __call__(self, event: Event) -> None:
        self.counts.see(event)
        if isinstance(event, PlanReady):
            self.note(
                f"{event.files} file(s), {human_bytes(event.bytes)}; to copy: "
                f"{event.to_copy_files} file(s), {human_bytes(event.to_copy_bytes)}"
            )
        elif isinstance(event, FileFailed):
            self.note(f"FAILED {event.path}: {event.error}")
        elif isinstance(event, Notice):
            if event.level == "warning" or self.verbose:
                self.note(f"{event.level}: {event.message}")
        elif isinstance(event, Retry):
            self.note(f"retry {event.attempt} for {event.path}: {event.error}")
        elif isinstance(event, FileFinished):
            if self.verbose or event.size >= LARGE_FILE:
                self.note(f"{event.outcome} {event.path} ({human_bytes(event.size)})")
        elif isinstance(event, BytesProgress):
            now = self.clock()
            if self.interval > 0 and now - self.last >= self.interval and event.total:
                self.last = now
                self.note(self.progress_line(event.done, event.total, now - self.started))

    def progress_line(self, done: int, total: int, elapsed: float) -> str:
        """``42.0% 1.2 GiB / 2.9 GiB, 95.3 MiB/s, 12/440 files, 0:00:13 elapsed``."""
        rate = f"{human_bytes(done / elapsed)}/s" if elapsed > 0 else "-"
        files = f", {self.counts}" if self.counts.total else ""
        return (
            f"{100 * done / total:5.1f}% {human_bytes(done)} / {human_bytes(total)}, "
            f"{rate}{files}, {int(elapsed) // 60}:{int(elapsed) % 60:02d} elapsed"
        )

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for text in lines:
            self.line(text)


class QuietRenderer(PlainRenderer):
    """``-q``: errors only, on stderr; the summary only when something went wrong."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, FileFailed):
            self.note(f"FAILED {event.path}: {event.error}")

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        if not data.get("ok", True) or data.get("exit_code", 0):
            for text in lines:
                self.note(text)


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
        self.finished: set[str] = set()
        self.counts = Counts()
        self.out = Output(sys.stdout)

    def __call__(self, event: Event) -> None:
        self.counts.see(event)
        if isinstance(event, PlanReady):
            self.progress.update(self.overall, total=event.bytes, files=str(self.counts))
        elif isinstance(event, BytesProgress):
            self.progress.update(self.overall, completed=event.done, total=event.total)
            self._update_files(event.active)
        elif isinstance(event, FileFailed):
            self.print(f"[red]FAILED[/red] {escape(event.path)}: {escape(event.error)}")
        elif isinstance(event, Notice):
            if event.level == "warning" or self.verbose:
                style = "yellow" if event.level == "warning" else "dim"
                self.print(f"[{style}]{event.level}:[/{style}] {escape(event.message)}")
        elif isinstance(event, Retry):
            self.print(f"[yellow]retry {event.attempt}[/yellow] {escape(event.path)}")
        elif isinstance(event, FileFinished):
            self._file_done(event)
        if isinstance(event, FileFinished | FileFailed):
            self.progress.update(self.overall, files=str(self.counts))

    def _file_done(self, event: FileFinished) -> None:
        self.finished.add(event.path)
        task = self.files.pop(event.path, None)
        if task is not None:
            self.progress.update(task, completed=event.size, stage="done")
            self.progress.remove_task(task)
        if self.verbose or event.size >= LARGE_FILE:
            self.print(f"[dim]{event.outcome} {escape(event.path)} ({human_bytes(event.size)})")

    def _update_files(self, active: tuple[tuple[str, int, int], ...]) -> None:
        current = {
            path: (done, size)
            for path, done, size in active[: self.MAX_FILE_BARS]
            if path not in self.finished
        }
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
        ok = data.get("ok") and not data.get("dry_run")
        if ok and (total := task_total(self.progress, self.overall)):
            self.progress.update(self.overall, completed=total)
        if data.get("throughput_bytes_per_s"):
            self.progress.update(self.overall, average=data["throughput_bytes_per_s"])
        self.finish(lines)


class LoggedRenderer:
    """Another renderer, with what it shows also written to ``--log-file``."""

    def __init__(self, inner: Renderer, logger: logging.Logger) -> None:
        self.inner, self.logger = inner, logger

    def __enter__(self) -> LoggedRenderer:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.__exit__(*exc_info)

    def __call__(self, event: Event) -> None:
        log = self.logger
        if isinstance(event, PlanReady):
            log.info("%d file(s), %s to check or copy", event.files, human_bytes(event.bytes))
        elif isinstance(event, FileFailed):
            log.error("FAILED %s: %s", event.path, event.error)
        elif isinstance(event, FileFinished):
            log.info("%s %s (%s)", event.outcome, event.path, human_bytes(event.size))
        elif isinstance(event, Retry):
            log.warning("retry %d for %s: %s", event.attempt, event.path, event.error)
        elif isinstance(event, Notice):
            log.log(logging.WARNING if event.level == "warning" else logging.INFO, event.message)
        self.inner(event)

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        for text in lines:
            self.logger.info("%s", text)
        self.inner.summary(data, lines)


def engine_renderer(
    json_output: bool,
    verbose: bool,
    *,
    quiet: bool = False,
    live: bool = False,
    interval: float = 10.0,
    log: logging.Logger | None = None,
) -> Renderer:
    """JSON lines on request, else quiet, rich on a terminal (or ``-P``), plain lines."""
    kind = display_kind(json_output, quiet, live)
    renderer: Renderer
    if kind == "json":
        renderer = JsonRenderer()
    elif kind == "quiet":
        renderer = QuietRenderer(verbose=False, interval=0)
    elif kind == "live":
        renderer = RichRenderer(verbose=verbose, force=live)
    else:
        renderer = PlainRenderer(verbose=verbose, interval=interval)
    return LoggedRenderer(renderer, log) if log is not None else renderer
