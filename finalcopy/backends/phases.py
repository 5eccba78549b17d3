"""Where a transfer's time goes: :class:`PhaseTimes`, filled by the backends.

``finalcopy bench`` shows these shares so an operator sees what limits a
destination: the bytes themselves, the commits (fsync and rename, or their
requests), or the verification.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Phase = Literal["stream", "commit", "verify"]


@dataclass
class PhaseTimes:
    """Seconds spent in each phase of a transfer, for ``finalcopy bench``'s time split.

    *stream*: reading, hashing and writing the bytes; *commit*: metadata,
    fsync and rename (or their requests); *verify*: the read-back or server
    hash. Concurrent files each count their own time, so a sum over a copy
    is worker-seconds: its shares say where the work goes, not wall time.
    """

    stream: float = 0.0
    commit: float = 0.0
    verify: float = 0.0

    @contextlib.contextmanager
    def timing(self, phase: Phase) -> Iterator[None]:
        """Add the time the block takes to ``phase`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, phase, getattr(self, phase) + time.perf_counter() - start)

    def add(self, other: PhaseTimes) -> None:
        """Add ``other``'s seconds to these."""
        self.stream += other.stream
        self.commit += other.commit
        self.verify += other.verify
