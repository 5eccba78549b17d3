"""What is measured: the settings (a product of option lists), their runs, and their order.

Each setting runs ``runs`` times, in rounds: round *r* runs every setting
once, starting with setting *r mod n*. Anything that drifts during a
benchmark (CPU frequency and heat, a neighbour's load, the page cache, a
disk's write-back) then hits every setting in every position about equally
often, instead of always penalizing whichever runs first or last.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from finalcopy.backends.phases import PhaseTimes
from finalcopy.bench.measure import Spread

__all__ = [
    "Run",
    "Setting",
    "SettingResult",
    "ToolResult",
    "rotated",
    "schedule",
    "settings_product",
]

MiB = 1 << 20
T = TypeVar("T")


def size_label(n: int) -> str:
    """``65536`` → ``64K``, ``1048576`` → ``1M``: how ``--chunk-size`` is typed."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


@dataclass(frozen=True)
class Setting:
    """One combination of the options under test."""

    jobs: int
    chunk_size: int
    algorithm: str
    verify: str

    @property
    def label(self) -> str:
        """``jobs 4 · 64K · blake3 · readback``: short enough for a table row."""
        return f"jobs {self.cells}"

    @property
    def cells(self) -> str:
        """``4 · 64K · blake3 · readback``, under a ``jobs · chunk · hash · verify`` header."""
        return f"{self.jobs} · {size_label(self.chunk_size)} · {self.algorithm} · {self.verify}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_product(
    jobs: Sequence[int],
    chunk_sizes: Sequence[int],
    algorithms: Sequence[str],
    verifies: Sequence[str],
) -> list[Setting]:
    """Every combination, in the order the lists give (jobs varying slowest)."""
    combos = itertools.product(jobs, chunk_sizes, algorithms, verifies)
    return [Setting(*combo) for combo in combos]


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` starting at ``shift``: each item leads once every ``len(items)`` rounds."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def schedule(count: int, runs: int) -> Iterator[tuple[int, int, int]]:
    """``(round, position, index)`` of every run: ``runs`` rounds over ``count`` items, rotated."""
    for round_ in range(runs):
        for position, index in enumerate(rotated(range(count), round_)):
            yield round_, position, index


@dataclass
class Run:
    """One timed copy: what it moved, how long it took, what it cost."""

    round: int
    position: int
    """Its place in its round, whose order rotates from round to round (0: first)."""
    wall_s: float
    times: PhaseTimes = field(default_factory=PhaseTimes)
    """Worker-seconds per phase (the engine's own figures); zero for other tools."""
    cpu_s: float = 0.0
    """CPU seconds of this process (every thread), or of the command and its children."""
    bytes: int = 0
    files: int = 0
    peak_rss: int | None = None
    rss_scope: str = "run"
    """``run``: this run's own peak; ``process``: the process's high-water mark so far
    (it could not be reset); ``command``: the largest process of a command's tree."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def files_s(self) -> float:
        return self.files / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "position": self.position,
            "ok": self.ok,
            "error": self.error,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "bytes": self.bytes,
            "files": self.files,
            "mib_s": round(self.mib_s, 2),
            "files_s": round(self.files_s, 1),
            "phases_s": {k: round(v, 4) for k, v in dataclasses.asdict(self.times).items()},
            "peak_rss_bytes": self.peak_rss,
            "peak_rss_scope": self.rss_scope,
        }


@dataclass
class SettingResult:
    """Every run of one setting, and what they say together."""

    setting: Setting
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def error(self) -> str | None:
        """The first failure, if any run failed (a failed setting is not run again)."""
        return next((r.error for r in self.runs if r.error), None)

    def mib_s(self) -> Spread | None:
        return Spread.of([r.mib_s for r in self.good])

    def files_s(self) -> Spread | None:
        return Spread.of([r.files_s for r in self.good])

    def wall_s(self) -> Spread | None:
        return Spread.of([r.wall_s for r in self.good])

    def cpu_percent(self) -> float | None:
        spread = Spread.of([r.cpu_percent for r in self.good])
        return spread.median if spread else None

    def peak_rss(self) -> int | None:
        peaks = [r.peak_rss for r in self.good if r.peak_rss is not None]
        return max(peaks) if peaks else None

    def shares(self) -> dict[str, float]:
        """Share of the worker-seconds of each phase, in %, over the good runs."""
        sums = PhaseTimes()
        for run in self.good:
            sums.add(run.times)
        seconds = dataclasses.asdict(sums)
        total = sum(seconds.values())
        return {k: (100 * v / total if total > 0 else 0.0) for k, v in seconds.items()}


@dataclass
class ToolResult:
    """Every run of one other tool (``--compare``), or why it did not run."""

    key: str
    label: str
    skipped: str | None = None
    """Why it did not run: ``not installed: rclone``, ``not for sftp destinations``."""
    runs: list[Run] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return next((r.error for r in self.runs if r.error), None)

    def wall_s(self) -> Spread | None:
        return Spread.of([r.wall_s for r in self.runs if r.ok])
