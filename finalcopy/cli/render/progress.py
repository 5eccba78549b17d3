"""The live display's one layout, shared by ``copy``, ``verify`` and ``run``.

Every bar, overall or per file or per project, has the same columns, in one
unit family (binary: MiB, MiB/s, as the summaries), so the same number means
the same thing wherever it shows. The speed is measured over the last
:data:`SPEED_WINDOW` seconds: on a steady transfer it agrees with the
summary's average, and it still follows a transfer that slows down.
"""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from finalcopy.cli.render.base import Output, human_bytes

SPEED_WINDOW = 5.0
"""Seconds of samples the shown speed is measured over."""


class BytesColumn(ProgressColumn):
    """``12.0 MiB/90.0 MiB``, binary units like the summary."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else human_bytes(task.total)
        return Text(f"{human_bytes(task.completed)}/{total}", style="progress.download")


class SpeedColumn(ProgressColumn):
    """Bytes per second over the window, in binary units; once done, the average the
    summary shows (the ``average`` field), so the last frame and the summary agree."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("average") or task.finished_speed or task.speed
        text = "-" if speed is None else f"{human_bytes(speed)}/s"
        return Text(text, style="progress.data.speed")


class FieldColumn(ProgressColumn):
    """A task field (``stage``, ``files``), blank when the task has none."""

    def __init__(self, name: str, width: int) -> None:
        super().__init__()
        self.name, self.width = name, width

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get(self.name, "")).ljust(self.width), style="cyan")


def progress_display(console: Console | None = None, force: bool = False) -> Progress:
    """A rich ``Progress`` on stderr: name, stage, bar, %, bytes, speed, files, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}", justify="left"),
        FieldColumn("stage", 9),
        BarColumn(bar_width=None),
        TextColumn("{task.percentage:>3.0f}%"),
        BytesColumn(),
        SpeedColumn(),
        FieldColumn("files", 0),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True, force_terminal=force or None),
        transient=False,
        speed_estimate_period=SPEED_WINDOW,
    )


def task_total(progress: Progress, task: TaskID) -> int:
    """The total of ``task``, looked up by id (rich lists tasks, it does not index them)."""
    return next(int(t.total or 0) for t in progress.tasks if t.id == task)


class LiveDisplay:
    """What every live renderer does with its display: start, stop, print above it."""

    progress: Progress
    out: Output

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def finish(self, lines: list[str]) -> None:
        """Draw the last frame and stop, then ``lines`` on stdout: the last thing on screen."""
        self.progress.refresh()
        self.progress.stop()
        for text in lines:
            self.out.write(text + "\n")
