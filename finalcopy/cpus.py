"""The CPUs this process may run on: the local backend's parallelism on a memory file
system is bounded by it, and benchmark reports name it (``nproc``)."""

from __future__ import annotations

import os

__all__ = ["cores"]


def cores() -> int:
    """The CPUs this process may run on (``nproc``), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
