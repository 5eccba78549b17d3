"""Where a local backend's batches run: a thread of this process, or a helper process.

A batch runs in one worker thread hop, whatever its size: the per-file cost
of small files is dominated by event-loop round trips otherwise.

In memory (tmpfs) nothing waits for a device: a file is all CPU (copies,
hashes, and for small files mostly Python). More threads than CPUs only
trade the interpreter lock and the caches there: on 2 cores, 2 large files
at once took 10 % less CPU and time than 4, and batches of small files,
which hand the lock over at every system call, 20 % less CPU one at a time
than 4 at once (up to twice as fast on a busy machine). So on a memory file
system at most one file per CPU is sent at once, and one batch of small
files; where a device is behind, and fsync or a read-back waits for it,
files go ``jobs`` at a time.

While this process sends a batch of small files, the next one goes to an
idle helper process where there is one (see :mod:`.helpers`): a second
core, which no thread of this process can use.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.to_thread

from finalcopy.backends.base import FileTransfer
from finalcopy.backends.helpers import Helpers, SendBatch
from finalcopy.cpus import cores
from finalcopy.hashing import Algorithm

__all__ = ["Lanes"]

_NO_LANE = contextlib.nullcontext()


class Lanes:
    """The lanes of one backend: its threads, its memory file system's limits, its helpers."""

    def __init__(self, helpers: Helpers | None) -> None:
        self.helpers = helpers
        self._memory_lane = anyio.Lock()
        """Held by the batch of small files this process sends to a memory file system."""
        self._memory_slots = anyio.Semaphore(cores())
        """One per file or batch this process sends to a memory file system."""
        self._small_here = 0
        """Batches of small files this process is sending (or waiting to)."""

    async def put(
        self, send: SendBatch, batch: list[FileTransfer], algorithm: Algorithm, *, memory: bool
    ) -> None:
        """``send(batch, algorithm)`` in a lane; ``memory``: to a memory file system."""
        small = len(batch) > 1
        helpers = self.helpers
        if small and helpers and self._small_here and await helpers.offer(send, batch, algorithm):
            return
        self._small_here += small
        try:
            if not memory:
                await anyio.to_thread.run_sync(send, batch, algorithm)
                return
            async with self._memory_lane if small else _NO_LANE, self._memory_slots:
                await anyio.to_thread.run_sync(send, batch, algorithm)
        finally:
            self._small_here -= small
