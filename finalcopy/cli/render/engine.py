"""Render engine events (``copy``, ``verify``): live bars (:mod:`.live`), plain lines, JSON lines.

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

from finalcopy.cli.render.base import Output, Renderer, display_kind, human_bytes, listing_text
from finalcopy.cli.render.counts import LARGE_FILE, Counts
from finalcopy.engine.events import (
    BytesProgress,
    Event,
    FileFailed,
    FileFinished,
    Listing,
    Notice,
    PlanReady,
    Retry,
)


def timestamp(clock: Callable[[], float] = time.time) -> str:
    """Now, as JSON events carry it: ISO 8601 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(clock(), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        elif isinstance(event, Listing):
            now = self.clock()
            if self.interval > 0 and now - self.last >= self.interval:
                self.last = now
                self.note(f"listing the source: {listing_text(event)} so far")

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
        # Imported here: rich is for terminals, a pipe or a log never loads it.
        from finalcopy.cli.render.live import RichRenderer

        renderer = RichRenderer(verbose=verbose, force=live)
    else:
        renderer = PlainRenderer(verbose=verbose, interval=interval)
    return LoggedRenderer(renderer, log) if log is not None else renderer
