"""The live display's one layout, shared by ``copy``, ``verify`` and ``run``.

Every bar, overall or per file or per project, has the same columns, so the
same number means the same thing wherever it shows.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def progress_display(console: Console | None = None) -> Progress:
    """A rich ``Progress`` on stderr: name, bar, bytes done/total, speed, time remaining."""
    return Progress(
        TextColumn("[bold]{task.description}", justify="left"),
        BarColumn(bar_width=None),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


def task_total(progress: Progress, task: TaskID) -> int:
    """The total of ``task``, looked up by id (rich lists tasks, it does not index them)."""
    return next(int(t.total or 0) for t in progress.tasks if t.id == task)
