"""How to copy (:class:`CopyOptions`) and what a copy did (:class:`CopyReport`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finalcopy.backends.phases import PhaseTimes
from finalcopy.choices import VerifyMode
from finalcopy.engine.bandwidth import BandwidthLimiter
from finalcopy.engine.events import EventSink, FileFailed, Notice, Retry
from finalcopy.engine.source import InspectorChooser, SourceRead
from finalcopy.errors import UsageError
from finalcopy.hashing import DEFAULT_ALGORITHM, Algorithm, get_algorithm

Clock = Callable[[], float]
"""Seconds from an arbitrary start, as :func:`time.monotonic` (the default) gives them."""

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class CopyOptions:
    """How to copy; every field has the CLI's default."""

    algorithm: str = DEFAULT_ALGORITHM
    chunk_size: int = 64 * KiB
    jobs: int = 4
    verify: VerifyMode = "readback"
    checksum: bool = False
    """Decide what to skip by hashing both sides instead of trusting the state file."""
    dry_run: bool = False
    inspectors: InspectorChooser | None = None
    """Per path, a factory of content inspectors fed the same chunks that are copied."""
    lock: bool = True
    """Hold the destination folder's lock (:mod:`finalcopy.engine.lock`) while copying;
    the pipeline turns it off because it holds that lock itself, for longer."""
    backup_dir: str = ""
    """When set (relative to the copy's root), a destination entry this copy would
    replace is first moved there under its own relative path, so that a caller can
    put it back (the pipeline's rollback). An entry already there is never
    overwritten: it is the oldest version, the one to restore."""
    keep_proofs: bool = False
    """Keep, per file, what a later deletion of the source and a rollback rely on
    (:attr:`CopyReport.proven`, ``seen`` and ``written``); the pipeline asks for them.
    A plain copy does not: they were a third of its memory per file."""
    bwlimit: BandwidthLimiter | None = None
    """``--bwlimit``: the one limiter of the invocation, shared by every copy given these
    options (``dataclasses.replace`` keeps the same object), so neither ``jobs`` nor
    several copies multiply the rate. None: no limit, and the read path never calls in."""

    def validate(self) -> Algorithm:
        """The hash algorithm, once every option is proven in range (else :class:`UsageError`)."""
        if not 4 * KiB <= self.chunk_size <= 16 * MiB:
            raise UsageError("--chunk-size must be between 4 KiB and 16 MiB")
        if not 1 <= self.jobs <= 64:
            raise UsageError("--jobs must be between 1 and 64")
        if self.verify not in ("readback", "size", "none"):
            raise UsageError(f"unknown verify mode '{self.verify}'")
        return get_algorithm(self.algorithm)


def timing(bytes_copied: int, duration: float) -> dict[str, Any]:
    """``duration`` (s, to the ms) and ``throughput_bytes_per_s``, as the JSON reports give them."""
    rate = round(bytes_copied / duration) if duration > 0 else 0
    return {"duration": round(duration, 3), "throughput_bytes_per_s": rate}


def record(obj: object, names: str) -> dict[str, Any]:
    """``{name: obj.name}`` for each of the space-separated ``names``, in order.

    The JSON records of the reports (copy, verify, run) are these fields, in
    this order, so a report's schema reads as one list of names.
    """
    return {name: getattr(obj, name) for name in names.split()}


@dataclass
class CopyReport:
    """What a copy did; ``ok`` is what the exit code reports."""

    source: str
    destination: str
    algorithm: str
    verify: str
    files: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    digests: Mapping[str, str] = field(default_factory=dict)
    """Source path → digest of every file proven at the destination (set at the end)."""
    duration: float = 0.0
    interrupted: bool = False
    dry_run: bool = False
    manifest: str = ""
    written: list[str] = field(default_factory=list)
    """Destination paths this run created or replaced (for rollback by the pipeline;
    with :attr:`CopyOptions.keep_proofs` only, as the two below)."""
    proven: dict[str, str] = field(default_factory=dict)
    """Source path → digest of the destination's bytes, computed in this run (read back,
    hashed on the server, or re-proven for a skipped file): the only proof that counts
    before deleting a source."""
    seen: dict[str, SourceRead] = field(default_factory=dict)
    """Source path → how the source looked when this run read it (streamed files only)."""
    replaced: dict[str, str] = field(default_factory=dict)
    """Destination path → where the entry it replaced was moved (``backup_dir``)."""
    times: PhaseTimes = field(default_factory=PhaseTimes)
    """Worker-seconds per phase over the files sent (see :class:`PhaseTimes`)."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        return {
            **record(self, "source destination algorithm verify ok files bytes copied skipped"),
            **record(self, "bytes_copied failed warnings"),
            **timing(self.bytes_copied, self.duration),
            **record(self, "interrupted dry_run manifest"),
        }


class Reporter:
    """A copy's report and its listener, kept in step: what the report records, the sink hears."""

    def __init__(self, report: CopyReport, events: EventSink) -> None:
        self.report = report
        self.events = events

    def fail(self, path: str, message: str) -> None:
        """``path`` was not copied, because of ``message``."""
        self.report.failed[path] = message
        self.events(FileFailed(path=path, error=message))

    def warn(self, message: str) -> None:
        """Something the operator should read (a skipped special file, a link not made)."""
        self.report.warnings.append(message)
        self.events(Notice(level="warning", message=message))

    def retried(self, path: str, attempt: int, error: str) -> None:
        """The backend is trying ``path`` again after ``error`` (a dropped connection)."""
        self.events(Retry(path=path, attempt=attempt, error=error))
