"""Events of a finalization run, for the CLI and for programs (``--json``).

Engine events are wrapped in :class:`ProjectEvent` to say which project and
which phase (``archive``, ``copy``, ``restore``) they belong to; the
project-level events below bracket each project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finalcopy.engine import Event, EventSink

PipelineSink = EventSink
"""A finalization's listener: the engine's sink type, hearing both kinds of events."""


@dataclass(frozen=True)
class RunPlanned(Event, kind="run_planned"):
    """Discovery is done: ``projects`` ready folders will be finalized."""

    work_dir: str = ""
    destination: str = ""
    projects: tuple[str, ...] = ()
    bytes: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class AboutProject(Event):
    """About one project, or one folder of the work directory that is not one.

    ``project`` is the folder's name, as in ``WORK_DIR/<project>`` and
    ``OUTPUT/<project>``.
    """

    project: str = ""


@dataclass(frozen=True)
class ProjectStarted(AboutProject, kind="project_started"):
    """A project is being finalized: ``index`` of ``total``, ``bytes`` to copy."""

    index: int = 0
    total: int = 0
    bytes: int = 0
    basis: str = ""


@dataclass(frozen=True)
class ProjectDone(AboutProject, kind="project_done"):
    """A project is finalized: copied, verified, its source deleted."""

    destination: str = ""
    bytes: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class ProjectNote(AboutProject):
    """What happened to a project (or folder), and why.

    ``not_ready``: a folder of the work directory is left alone this time
    (``-v`` shows it); ``project_failed``: not finalized (failed or
    interrupted), its source is kept; ``project_skipped``: not attempted
    (another run holds it, or it vanished or is no longer ready).
    """

    reason: str = ""


# No fields of their own: ProjectNote's dataclass serves them.
class FolderNotReady(ProjectNote, kind="not_ready"):
    """A folder is not a ready project this time."""


class ProjectFailed(ProjectNote, kind="project_failed"):
    """A project is not finalized; its source is kept."""


class ProjectSkipped(ProjectNote, kind="project_skipped"):
    """A project was not attempted."""


@dataclass(frozen=True)
class ProjectEvent(AboutProject, kind="engine"):
    """An engine event of one project's ``phase``; its dict is the engine's plus both tags."""

    phase: str = ""
    event: Event | None = None

    def to_dict(self) -> dict[str, Any]:
        inner = self.event.to_dict() if self.event is not None else {}
        return {**inner, "project": self.project, "phase": self.phase}
