"""Progress events the engine emits; UI-free so any front end can render them.

A sink is a plain callable called on the event loop; it must not block. The
CLI renders events with rich, as plain lines, or as JSON lines: each event's
:meth:`~Event.to_dict` is its ``kind`` followed by its fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class Event:
    """Something a copy (or a finalization) tells its listener; ``kind`` names it in JSON."""

    kind: ClassVar[str] = "event"

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        """``class FileFailed(FileEvent, kind="file_failed")`` names the subclass's kind."""
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PlanReady(Event, kind="plan"):
    """The source tree was scanned, and what is left to copy decided."""

    files: int = 0
    bytes: int = 0
    to_copy_files: int = 0
    to_copy_bytes: int = 0


@dataclass(frozen=True)
class FileEvent(Event):
    """About one file.

    ``path`` is relative to the source: also the destination path, unless
    the backend stores the name differently (NTFS ``--ntfs-names map``).
    """

    path: str = ""


@dataclass(frozen=True)
class FileStarted(FileEvent, kind="file_started"):
    """A large file started streaming (small files travel in batches, unannounced)."""

    size: int = 0


@dataclass(frozen=True)
class FileFinished(FileEvent, kind="file_done"):
    """A file is at its destination and verified, or was proven there already (skipped)."""

    size: int = 0
    digest: str = ""
    outcome: Literal["copied", "skipped", "resumed"] = "copied"


@dataclass(frozen=True)
class FileFailed(FileEvent, kind="file_failed"):
    """A file was not copied (or does not match); ``error`` says why."""

    error: str = ""


@dataclass(frozen=True)
class Retry(FileEvent, kind="retry"):
    """The backend is trying a file again after ``error`` (a dropped connection)."""

    attempt: int = 0
    error: str = ""


@dataclass(frozen=True)
class BytesProgress(Event, kind="progress"):
    """Bytes handled so far (copied and skipped) out of the plan's total."""

    done: int = 0
    total: int = 0
    active: tuple[tuple[str, int, int], ...] = ()
    """Large files in flight: (path, bytes done, size)."""


@dataclass(frozen=True)
class Listing(Event, kind="listing"):
    """The source is still being listed: files and bytes found so far (long walks only)."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Notice(Event, kind="notice"):
    """Something the operator should read: a skipped special file, the chosen strategy."""

    level: Literal["info", "warning"] = "info"
    message: str = ""


EventSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """The sink used when nobody listens."""
