"""What a finalization did: the final JSON report, and the status file polled while it runs.

Both schemas are documented in ``docs/run.md``; ``schema`` is bumped on any
incompatible change.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import finalcopy.finalize.events as run_events
from finalcopy.engine import BytesProgress, Event, Notice
from finalcopy.engine.options import record, timing
from finalcopy.errors import EXIT_DESTINATION, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from finalcopy.smallfiles import write_atomic

SCHEMA = 1

ProjectStatus = Literal["finalized", "failed", "skipped", "interrupted", "planned"]
FinalizationState = Literal["running", "done", "failed", "interrupted"]


def now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Fallback:
    """Whether the projects went somewhere else than the output, and why.

    ``{"used": false}`` in the report and the status file when the output was
    used (or when none was usable); otherwise the intended output, why it was
    passed over and the folder used instead.
    """

    used: bool = False
    reason: str = ""
    intended: str = ""
    used_destination: str = ""

    @property
    def message(self) -> str:
        """The WARNING shown in the log and on the console."""
        return (
            f"FALLBACK: the output '{self.intended}' is not usable ({self.reason}); "
            f"finalizing into '{self.used_destination}' instead "
            "(--no-fallback or FINALIZE_NO_FALLBACK=1 makes this an error)"
        )

    def to_dict(self) -> dict[str, Any]:
        if not self.used:
            return {"used": False}
        return {
            "used": True,
            "reason": self.reason,
            "intended": self.intended,
            "used_destination": self.used_destination,
        }


@dataclass
class ProjectResult:
    """One project's outcome."""

    name: str
    status: ProjectStatus
    basis: str = ""
    reason: str = ""
    source: str = ""
    destination: str = ""
    archive: str = ""
    files: int = 0
    bytes: int = 0
    bytes_copied: int = 0
    duration: float = 0.0
    source_deleted: bool = False
    restored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **record(self, "name status basis reason source destination archive files bytes"),
            **record(self, "bytes_copied"),
            **timing(self.bytes_copied, self.duration),
            **record(self, "source_deleted restored warnings"),
        }


@dataclass
class FinalizationReport:
    """The outcome of :func:`~finalcopy.finalize.run_finalization`; see ``exit_code``."""

    work_dir: str
    base_dir: str
    mode: str
    on_existing: str
    dry_run: bool
    started_at: str = field(default_factory=now_iso)
    finished_at: str = ""
    duration: float = 0.0
    destination: str = ""
    destination_notes: list[str] = field(default_factory=list)
    """Why the output or the fallback was not used, when it was not."""
    destination_unusable: bool = False
    fallback: Fallback = field(default_factory=Fallback)
    archives_dir: str = ""
    log_file: str = ""
    interrupted: bool = False
    projects: list[ProjectResult] = field(default_factory=list)
    not_ready: dict[str, str] = field(default_factory=dict)
    """Folders that are not ready (or not projects), with the reason."""
    bwlimit: int | list[dict[str, Any]] | None = None
    """``--bwlimit``: bytes per second, the timetable, or None (no limit)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def finalized(self) -> int:
        return sum(1 for p in self.projects if p.status == "finalized")

    @property
    def failed(self) -> int:
        return sum(1 for p in self.projects if p.status == "failed")

    @property
    def exit_code(self) -> int:
        if self.destination_unusable:
            return EXIT_DESTINATION
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK

    @property
    def state(self) -> FinalizationState:
        if self.interrupted:
            return "interrupted"
        return "done" if self.exit_code == EXIT_OK else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": "finalize_report",
            "state": self.state,
            "exit_code": self.exit_code,
            "work_dir": self.work_dir,
            "base_dir": self.base_dir,
            "destination": self.destination,
            "destination_notes": self.destination_notes,
            "fallback": self.fallback.to_dict(),
            "archives_dir": self.archives_dir,
            "log_file": self.log_file,
            "mode": self.mode,
            "on_existing": self.on_existing,
            "dry_run": self.dry_run,
            "bwlimit": self.bwlimit,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": round(self.duration, 3),
            "totals": {
                "projects": len(self.projects),
                "finalized": self.finalized,
                "failed": self.failed,
                "skipped": sum(1 for p in self.projects if p.status == "skipped"),
                "bytes": sum(p.bytes for p in self.projects),
                "bytes_copied": sum(p.bytes_copied for p in self.projects),
            },
            "projects": [p.to_dict() for p in self.projects],
            "not_ready": self.not_ready,
        }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a report or the status file: readers never see it half written."""
    write_atomic(path, (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


class StatusFile:
    """``LOG_DIR/step7_status.json``, kept current from the run's events.

    Rewritten at most once a second on progress, at once on project
    boundaries; a failure to write it never stops the run.
    """

    def __init__(
        self,
        path: Path | None,
        report: FinalizationReport,
        clock: Any = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.report = report
        self.clock = clock
        self.interval = interval
        self.last = float("-inf")
        self.current: str | None = None
        self.total_projects = 0
        self.total_bytes = 0
        self.bytes_before = 0
        """Bytes of the projects already finished."""
        self.current_bytes = 0
        self.error: str | None = None

    def __call__(self, event: Event) -> None:
        urgent = True
        if isinstance(event, run_events.RunPlanned):
            self.total_projects = len(event.projects)
            self.total_bytes = event.bytes
        elif isinstance(event, run_events.ProjectStarted):
            self.current = event.project
            self.current_bytes = 0
        elif isinstance(
            event, run_events.ProjectDone | run_events.ProjectFailed | run_events.ProjectSkipped
        ):
            self.current = None
            self.bytes_before += self._project_bytes(event.project)
            self.current_bytes = 0
        elif (
            isinstance(event, run_events.ProjectEvent)
            and event.phase == "copy"
            and isinstance(event.event, BytesProgress)
        ):
            self.current_bytes = event.event.done
            urgent = False
        elif isinstance(event, Notice) and event.level == "warning":
            pass  # the run-level warning (a fallback): show it at once
        else:
            return
        self.write(force=urgent)

    def _project_bytes(self, name: str) -> int:
        for project in self.report.projects:
            if project.name == name:
                return project.bytes
        return self.current_bytes

    def snapshot(self, state: FinalizationState = "running") -> dict[str, Any]:
        done = sum(1 for p in self.report.projects if p.status == "finalized")
        failed = sum(1 for p in self.report.projects if p.status == "failed")
        skipped = sum(1 for p in self.report.projects if p.status == "skipped")
        return {
            "schema": SCHEMA,
            "kind": "finalize_status",
            "state": state,
            "pid": os.getpid(),
            "work_dir": self.report.work_dir,
            "destination": self.report.destination,
            "fallback": self.report.fallback.to_dict(),
            "log_file": self.report.log_file,
            "current_project": self.current,
            "projects": {
                "total": self.total_projects,
                "done": done,
                "failed": failed,
                "skipped": skipped,
            },
            "bytes": {
                "total": self.total_bytes,
                "done": min(self.total_bytes, self.bytes_before + self.current_bytes),
            },
            "started_at": self.report.started_at,
            "updated_at": now_iso(),
            "exit_code": None if state == "running" else self.report.exit_code,
        }

    def write(self, *, force: bool = False, state: FinalizationState = "running") -> None:
        if self.path is None:
            return
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        try:
            write_json(self.path, self.snapshot(state))
        except OSError as exc:
            self.error = f"cannot write the status file '{self.path}': {exc.strerror or exc}"

    def close(self) -> None:
        self.current = None
        self.write(force=True, state=self.report.state)
