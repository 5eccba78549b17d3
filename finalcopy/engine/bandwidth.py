"""``--bwlimit``: one token bucket for a whole invocation, its parsing, and its timetable.

Why one bucket, created once by the caller (the CLI, or ``Settings.resolve``)
and handed to every copy in :class:`~finalcopy.engine.options.CopyOptions`:
``finalcopy run`` copies several projects and archives through several
``copy_tree`` calls, each with ``--jobs`` files in flight on as many threads;
a limit per copy or per file would multiply by those. One shared bucket
behind a lock keeps the whole invocation at the rate.

Why it is charged in :class:`~finalcopy.engine.source.FileChunkSource`: every
byte a backend sends (local, NTFS, SFTP, the generic loop) is first read
there, in a worker thread, so a blocking :meth:`BandwidthLimiter.take` there
is backend-agnostic. Only bytes sent count: hashing a source to prove a skip
(``SourceOpener.digest``) or to compare a resume prefix is not throttled.
With no limit the sources hold ``None`` and the read path never calls in.

The bucket holds about :data:`BURST_SECONDS` of rate (at least one default
chunk), so the rate holds over short windows too; a reader free to choose its
read size (the local backend's blocks) reads no more than that at once
(:meth:`BandwidthLimiter.block`). A take larger than what the bucket holds
(SFTP reads 16 chunks per batch) runs into debt: the caller sleeps until the
debt is paid, and later callers queue behind it. Sleeps happen outside the
lock, in short naps that watch the cancel flag.

Rates are bytes per second in the CLI's size grammar, binary units (``10M``
is 10 MiB/s); ``off`` or ``0`` is no limit. A timetable, as rclone writes it,
is ``"08:00,10M 19:00,off"``: the entry in force is the last one whose time
of day has passed, wrapping from the previous day (so 10 MiB/s from 08:00 to
19:00, no limit overnight). The clock, the sleep and the wall time are
injectable, so tests neither sleep nor depend on the hour.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from finalcopy.errors import UsageError
from finalcopy.sizes import parse_size

OPTION = "--bwlimit"
BURST_SECONDS = 0.1
"""The bucket's depth, in seconds of rate: a burst never exceeds this much."""
MIN_BURST = 64 * 1024
"""The bucket's least depth: one default chunk, so a chunk never waits behind itself."""
NAP_SECONDS = 0.25
"""Longest single sleep: a cancelled copy stops waiting within this."""
RECHECK_SECONDS = 1.0
"""A timetable is looked up at most this often (wall time is not read per chunk)."""

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_EXAMPLES = "examples: 10M, 512K, 1048576, off, or a timetable '08:00,10M 19:00,off'"


def parse_rate(text: str, option: str = OPTION) -> int | None:
    """Bytes per second (``10M``, ``512K``, ``1048576``); None for ``off`` or ``0``."""
    if text.strip().lower() == "off":
        return None
    return parse_size(text, option, what="rate", examples=_EXAMPLES) or None


@dataclass(frozen=True)
class Slot:
    """One timetable entry: ``rate`` (None: unlimited) from ``start`` minutes after midnight."""

    start: int
    rate: int | None

    @property
    def label(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}"


@dataclass(frozen=True)
class Schedule:
    """A parsed ``--bwlimit``: a plain rate is one slot from 00:00, a timetable several."""

    slots: tuple[Slot, ...]
    """Sorted by start; never empty."""
    timetable: bool = False

    @property
    def limited(self) -> bool:
        """Whether any slot limits at all (else no limiter is needed)."""
        return any(slot.rate is not None for slot in self.slots)

    def rate_at(self, minute: int) -> int | None:
        """The rate in force ``minute`` minutes after midnight: the last slot started,
        else the day's last slot (still in force from the previous day)."""
        current = self.slots[-1]
        for slot in self.slots:
            if slot.start > minute:
                break
            current = slot
        return current.rate

    def to_json(self) -> int | list[dict[str, Any]] | None:
        """Bytes per second, or the timetable as ``[{"from": "08:00", "bytes_per_s": …}]``."""
        if not self.timetable:
            return self.slots[0].rate
        return [{"from": s.label, "bytes_per_s": s.rate} for s in self.slots]


def parse_bwlimit(text: str, option: str = OPTION) -> Schedule:
    """A rate or a timetable (``"08:00,10M 19:00,off"``); a bad one is a :class:`UsageError`
    naming ``option`` (the option, or the environment variable it came from)."""
    if "," not in text:
        return Schedule((Slot(0, parse_rate(text, option)),))
    slots: dict[int, Slot] = {}
    for entry in text.split():
        parts = entry.split(",")
        if len(parts) != 2:
            raise UsageError(f"{option} '{text}': '{entry}' is not a timetable entry HH:MM,RATE")
        when, rate = parts
        match = _TIME.match(when)
        if not match:
            raise UsageError(f"{option} '{text}': '{when}' is not a time of day (HH:MM)")
        slot = Slot(int(match[1]) * 60 + int(match[2]), _rate_in(text, rate, option))
        if slot.start in slots:
            raise UsageError(f"{option} '{text}': {slot.label} appears twice")
        slots[slot.start] = slot
    return Schedule(tuple(sorted(slots.values(), key=lambda s: s.start)), timetable=True)


def _rate_in(text: str, rate: str, option: str) -> int | None:
    try:
        return parse_rate(rate, option)
    except UsageError:
        raise UsageError(f"{option} '{text}': '{rate}' is not a rate ({_EXAMPLES})") from None


def _minute_of_day(now: datetime) -> int:
    return now.hour * 60 + now.minute


class BandwidthLimiter:
    """A token bucket shared by every thread that sends bytes, following a :class:`Schedule`.

    ``clock`` (monotonic seconds) and ``sleep`` pace the bucket; ``wall``
    (local date and time) says which timetable entry is in force.
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        wall: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.schedule = schedule
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._lock = threading.Lock()
        self._last = clock()
        self._rate = schedule.rate_at(_minute_of_day(wall()))
        self._tokens = self._depth(self._rate)
        self._recheck = self._last + RECHECK_SECONDS if schedule.timetable else float("inf")
        self._entry = 0
        """Counts the timetable's changes of rate: a wait ends when its entry does."""

    def rate(self) -> int | None:
        """The rate in force now (bytes per second; None: unlimited)."""
        with self._lock:
            return self._current(self._clock())

    def capacity(self) -> float:
        """How many bytes the bucket holds at the current rate: the largest burst."""
        return self._depth(self.rate())

    def block(self, wanted: int) -> int:
        """How many of ``wanted`` bytes to read at once: no more than the bucket holds, so
        that a caller free to choose its read size sends at the rate, not in bursts."""
        return max(1, min(wanted, int(self.capacity()) or wanted))

    def take(self, n: int, cancel: threading.Event | None = None) -> None:
        """Charge ``n`` bytes about to be sent; block until the rate allows them.

        Returns early, without sending being allowed, once ``cancel`` is set:
        the caller's next read raises ``Interrupted``.
        """
        with self._lock:
            now = self._clock()
            rate = self._current(now)
            if rate is None:
                return
            refill = (now - self._last) * rate
            self._tokens = min(self._depth(rate), self._tokens + refill) - n
            self._last = now
            if self._tokens >= 0:
                return
            until = now - self._tokens / rate  # this caller's place in the queue
            entry = self._entry
        while (left := until - self._clock()) > 0:
            if cancel is not None and cancel.is_set():
                return
            self._sleep(min(left, NAP_SECONDS))
            if self.schedule.timetable and self._moved_on(entry):
                return  # a new timetable entry: its own rate, no debt carried over

    def _moved_on(self, entry: int) -> bool:
        """Whether the timetable has left ``entry`` (looked up now, at most once a second)."""
        with self._lock:
            self._current(self._clock())
            return self._entry != entry

    def _depth(self, rate: int | None) -> float:
        return 0.0 if rate is None else max(rate * BURST_SECONDS, MIN_BURST)

    def _current(self, now: float) -> int | None:
        """The rate in force (called under the lock), the timetable read at most once a second."""
        if now >= self._recheck:
            self._recheck = now + RECHECK_SECONDS
            rate = self.schedule.rate_at(_minute_of_day(self._wall()))
            if rate != self._rate:
                # A new entry starts with a full bucket of its own rate, no debt carried.
                self._rate, self._tokens, self._last = rate, self._depth(rate), now
                self._entry += 1
        return self._rate


def limiter_for(text: str | None, option: str = OPTION, **kwargs: Any) -> BandwidthLimiter | None:
    """The limiter ``text`` asks for, or None when it never limits (``off``, ``0``, unset).

    ``kwargs`` go to :class:`BandwidthLimiter` (an injected clock, sleep, wall time).
    """
    if text is None:
        return None
    schedule = parse_bwlimit(text, option)
    return BandwidthLimiter(schedule, **kwargs) if schedule.limited else None


def bwlimit_json(limiter: BandwidthLimiter | None) -> int | list[dict[str, Any]] | None:
    """The ``bwlimit`` of the JSON reports: bytes per second, the timetable, or null."""
    return None if limiter is None else limiter.schedule.to_json()
