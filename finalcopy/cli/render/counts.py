"""What the engine renderers count: files done out of the plan, and which files are large."""

from __future__ import annotations

from finalcopy.engine.events import Event, FileFailed, FileFinished, PlanReady
from finalcopy.engine.transfer import SMALL_FILE

LARGE_FILE = SMALL_FILE
"""Files from this size get a line when they finish (and a bar while in flight).

The engine's own threshold: the files it announces as started and lists in
flight, so a file with a bar is exactly one that gets a line.
"""


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
