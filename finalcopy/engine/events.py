"""Progress events the engine emits; UI-free so any front end can render them.

A sink is a plain callable called on the event loop; it must not block. The
CLI renders events with rich, as plain lines, or as JSON lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    kind: str = field(init=False, default="event")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlanReady(Event):
    """The source tree was scanned."""

    kind: str = field(init=False, default="plan")
    files: int = 0
    bytes: int = 0
    to_copy_files: int = 0
    to_copy_bytes: int = 0


@dataclass(frozen=True)
class FileStarted(Event):
    kind: str = field(init=False, default="file_started")
    path: str = ""
    size: int = 0


@dataclass(frozen=True)
class FileFinished(Event):
    kind: str = field(init=False, default="file_done")
    path: str = ""
    size: int = 0
    digest: str = ""
    outcome: Literal["copied", "skipped", "resumed"] = "copied"


@dataclass(frozen=True)
class FileFailed(Event):
    kind: str = field(init=False, default="file_failed")
    path: str = ""
    error: str = ""


@dataclass(frozen=True)
class BytesProgress(Event):
    """Bytes handled so far (copied and skipped) out of the plan's total."""

    kind: str = field(init=False, default="progress")
    done: int = 0
    total: int = 0
    active: tuple[tuple[str, int, int], ...] = ()
    """Large files in flight: (path, bytes done, size)."""


@dataclass(frozen=True)
class Retry(Event):
    kind: str = field(init=False, default="retry")
    path: str = ""
    attempt: int = 0
    error: str = ""


@dataclass(frozen=True)
class Notice(Event):
    """Something the operator should read: a skipped special file, the chosen strategy."""

    kind: str = field(init=False, default="notice")
    level: Literal["info", "warning"] = "info"
    message: str = ""


EventSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """The sink used when nobody listens."""
