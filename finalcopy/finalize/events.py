"""Events of a finalization run, for the CLI and for programs (``--json``).

Engine events are wrapped in :class:`ProjectEvent` to say which project and
which phase (``archive``, ``copy``, ``restore``) they belong to; the
project-level events below bracket each project.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finalcopy.engine import Event


@dataclass(frozen=True)
class RunPlanned(Event):
    """Discovery is done: ``projects`` ready folders will be finalized."""

    kind: str = field(init=False, default="run_planned")
    work_dir: str = ""
    destination: str = ""
    projects: tuple[str, ...] = ()
    bytes: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class FolderNotReady(Event):
    """A folder of the work directory is left alone this time, and why (``-v`` shows it)."""

    kind: str = field(init=False, default="not_ready")
    project: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ProjectStarted(Event):
    """A project is being finalized: ``index`` of ``total``, ``bytes`` to copy."""

    kind: str = field(init=False, default="project_started")
    project: str = ""
    index: int = 0
    total: int = 0
    bytes: int = 0
    basis: str = ""


@dataclass(frozen=True)
class ProjectDone(Event):
    """A project is finalized: copied, verified, its source deleted."""

    kind: str = field(init=False, default="project_done")
    project: str = ""
    destination: str = ""
    bytes: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class ProjectFailed(Event):
    """A project is not finalized (failed or interrupted); its source is kept."""

    kind: str = field(init=False, default="project_failed")
    project: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ProjectSkipped(Event):
    """A project was not attempted: another run holds it, or it vanished or is no longer ready."""

    kind: str = field(init=False, default="project_skipped")
    project: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ProjectEvent(Event):
    """An engine event of one project's ``phase``; its dict is the engine's plus both tags."""

    kind: str = field(init=False, default="engine")
    project: str = ""
    phase: str = ""
    event: Event | None = None

    def to_dict(self) -> dict[str, Any]:
        inner = self.event.to_dict() if self.event is not None else {}
        return {**inner, "project": self.project, "phase": self.phase}


PipelineSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """The sink used when nobody listens."""
