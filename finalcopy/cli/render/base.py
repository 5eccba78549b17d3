"""The renderer interface, and the pieces every renderer shares: units, a safe stream."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

if TYPE_CHECKING:
    from finalcopy.engine.events import Event, Listing


class Renderer(Protocol):
    """An event sink around a command's work, so the engine never knows how it is shown."""

    def __call__(self, event: Event) -> None: ...

    def __enter__(self) -> Renderer: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def summary(self, data: dict[str, Any], lines: list[str]) -> None:
        """Show the final report: ``data`` for machines, ``lines`` for people."""


def human_bytes(n: float) -> str:
    """Bytes in binary units, as operators read them (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def listing_text(event: Listing) -> str:
    """``12,345 file(s), 3.2 GiB``: what a long walk of the source has found."""
    return f"{event.files:,} file(s), {human_bytes(event.bytes)}"


class Output:
    """A text stream that survives its reader going away (``finalcopy … | head``).

    The copy goes on and its summary still decides the exit code; only the
    printing stops. Aborting a half-done copy because a pager closed would be
    worse than staying quiet.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.closed = False

    def write(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


def warn(message: str) -> None:
    """A warning on stderr, where people look even when stdout is for programs."""
    with contextlib.suppress(OSError):
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


def header(text: str, json_output: bool, quiet: bool) -> None:
    """A line on stderr before the progress starts (above the live bars, or first of the
    plain lines) naming a setting in force; not for programs (``--json``) nor with ``-q``."""
    if text and not json_output and not quiet:
        with contextlib.suppress(OSError):
            print(text, file=sys.stderr, flush=True)


def display_kind(
    json_output: bool, quiet: bool, live: bool
) -> Literal["json", "quiet", "live", "plain"]:
    """Which display a command shows: JSON lines on request, else errors only with ``-q``,
    else the live display on a terminal (or with ``-P``), else plain lines."""
    if json_output:
        return "json"
    if quiet:
        return "quiet"
    return "live" if live or sys.stderr.isatty() else "plain"
