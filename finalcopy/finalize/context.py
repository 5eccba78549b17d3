"""What every project of one finalization shares: settings, destination, journal, guard..."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from finalcopy.backends import Backend
from finalcopy.engine import Event, EventSink
from finalcopy.finalize.archive import ArchiveStep
from finalcopy.finalize.deletion import DeletionGuard
from finalcopy.finalize.events import PipelineSink, ProjectEvent
from finalcopy.finalize.journal import Journal
from finalcopy.finalize.settings import Settings
from finalcopy.hashing import Algorithm


@dataclass(frozen=True)
class FinalizationContext:
    """The parts of a finalization that each project's finalizer uses and none changes."""

    settings: Settings
    output: Backend
    output_dest: str
    """The destination string ``output`` was opened from (recorded in journals)."""
    archives: ArchiveStep
    algorithm: Algorithm
    log: logging.Logger
    events: PipelineSink
    cancel: threading.Event
    journal: Journal
    guard: DeletionGuard
    run_id: str
    """This finalization's id, recorded in journals and in each copy's ``finalize.json``."""

    def project_events(self, project: str, phase: str) -> EventSink:
        """A sink that tags engine events with ``project`` and ``phase`` before passing them on."""
        events = self.events

        def sink(event: Event) -> None:
            events(ProjectEvent(project=project, phase=phase, event=event))

        return sink
