"""What a copy has proven, kept in ``DEST/.finalcopy/`` as the copy goes.

The :class:`Ledger` holds one :class:`~finalcopy.engine.state.StateRecord`
per file proven at the destination (skipped after proof, or copied and
verified). It rewrites ``state.jsonl`` every :data:`CHECKPOINT_SECONDS` by
the copy's clock, so a crash loses at most that much work, and at the end
writes the manifest, ``names.tsv`` (when the backend mapped names) and the
state once more.

A checkpoint rewrites the whole state, so its cost grows with the records:
at a fixed pace, a copy of millions of files would spend most of its time
rewriting a state of millions of lines (quadratic in the tree). So a
checkpoint also waits until the last one's cost is at most
:data:`CHECKPOINT_SHARE` of the time since: a state that took 0.5 s to write
is rewritten every 10 s. The work a crash loses stays bounded (20 times the
time it takes to write the state), and checkpoints cost at most 5 % of a
copy, whatever its size. The state is a hint (:mod:`.skip`): what a crash
loses is copied again, never trusted unproven.

Each of these files is streamed through the backend's one write primitive
(:func:`store_lines`): ``open_temp`` → ``write``, a chunk at a time →
``commit``, aborted on failure. A manifest of a million paths is never one
bytes object in memory, and a reader sees the old file or the new one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from time import perf_counter

import anyio

from finalcopy.backends.base import NEW_FILE_MODE, Backend, RetryListener
from finalcopy.engine.layout import Layout
from finalcopy.engine.manifest import manifest_lines
from finalcopy.engine.options import Clock
from finalcopy.engine.state import (
    NAMES_NAME,
    STATE_NAME,
    StateRecord,
    names_lines,
    parse_state,
    state_lines,
)
from finalcopy.errors import ConnectionLostError
from finalcopy.hashing import Algorithm

CHECKPOINT_SECONDS = 2.0
"""How often the state file is rewritten during a run, at most (see :data:`CHECKPOINT_SHARE`)."""
CHECKPOINT_SHARE = 0.05
"""Most of a copy's time its checkpoints may take (the interval grows with their cost)."""
CHUNK_BYTES = 1 << 20
"""About how much text is encoded and written at once."""
STORE_ATTEMPTS = 3
"""Writes of one file started over after a dropped connection (the backend reconnects)."""


def _chunks(lines: Iterable[str]) -> Iterator[bytes]:
    batch: list[str] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(batch).encode("utf-8", "surrogateescape")
            batch, size = [], 0
    if batch:
        yield "".join(batch).encode("utf-8", "surrogateescape")


async def store_lines(
    backend: Backend,
    path: str,
    lines: Callable[[], Iterable[str]],
    on_retry: RetryListener | None = None,
) -> None:
    """Replace the file ``path`` with ``lines()``, atomically, its folder made first.

    Encoded ``utf-8`` with ``surrogateescape`` (names that are not UTF-8 stay
    the bytes they were). A dropped connection starts the file over (``lines``
    is called again), up to :data:`STORE_ATTEMPTS` times, telling ``on_retry``.
    """
    folder = posixpath.dirname(path)
    if folder:
        await backend.makedirs([folder])
    for attempt in range(1, STORE_ATTEMPTS + 1):
        writer = await backend.open_temp(path)
        try:
            for chunk in _chunks(lines()):
                await writer.write(chunk)
            await writer.commit(mode=NEW_FILE_MODE, mtime_ns=None)
            return
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            if not isinstance(exc, ConnectionLostError) or attempt == STORE_ATTEMPTS:
                raise
            if on_retry is not None:
                on_retry(backend.describe(path), attempt + 1, str(exc))


class _Digests(Mapping[str, str]):
    """The digests of a ledger's records, read through (see :meth:`Ledger.digests`)."""

    def __init__(self, records: dict[str, StateRecord]) -> None:
        self._records = records

    def __getitem__(self, path: str) -> str:
        return self._records[path].digest

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class Ledger:
    """The state records of one copy, and the files of ``.finalcopy/`` that keep them."""

    def __init__(
        self,
        layout: Layout,
        algorithm: Algorithm,
        clock: Clock,
        on_retry: RetryListener | None = None,
    ) -> None:
        self.layout = layout
        self.algorithm = algorithm
        self.clock = clock
        self.on_retry = on_retry
        self.records: dict[str, StateRecord] = {}
        """Source path → its record, for every file proven in this run."""
        self._checkpoint = clock()
        self._interval = CHECKPOINT_SECONDS

    def digests(self) -> Mapping[str, str]:
        """Source path → digest of each record: a view, not a second dict per file."""
        return _Digests(self.records)

    async def previous(self) -> dict[str, StateRecord]:
        """The records an earlier copy left (invalid lines skipped); none without a state."""
        data = await self.layout.backend.read_bytes(self.layout.meta(STATE_NAME))
        return parse_state(data) if data else {}

    async def checkpoint(self) -> None:
        """Rewrite the state if :data:`CHECKPOINT_SECONDS` have passed since the last time,
        and the last rewrite took at most :data:`CHECKPOINT_SHARE` of the time since."""
        if self.clock() - self._checkpoint >= self._interval:
            await self.write_state()

    async def write_state(self) -> None:
        """``state.jsonl``: the records, in plan order."""
        self._checkpoint = self.clock()
        started = perf_counter()  # its real cost, whatever clock paces the copy
        records = self.records
        ordered = [r for f in self.layout.plan.files if (r := records.get(f.path)) is not None]
        await self._store(STATE_NAME, lambda: state_lines(ordered))
        cost = perf_counter() - started
        self._interval = max(CHECKPOINT_SECONDS, cost / CHECKPOINT_SHARE)

    async def write_manifest(self) -> str:
        """The manifest, ``names.tsv`` when names were mapped, then the state; names the first.

        The manifest lists paths as stored (relative to the copy's root), which
        is what a checker run at the destination opens.
        """
        layout = self.layout
        renamed = layout.renamed()
        # Every recorded path is planned, so ``renamed`` knows how each is stored.
        digests = (
            {renamed.get(path, path): r.digest for path, r in self.records.items()}
            if renamed
            else self.digests()  # stored as named: no second dict of every path
        )
        name = self.algorithm.manifest_name
        await self._store(name, lambda: manifest_lines(digests, algorithm=self.algorithm.name))
        if renamed:
            await self._store(NAMES_NAME, lambda: names_lines(renamed))
        await self.write_state()
        return layout.backend.describe(layout.meta(name))

    async def _store(self, name: str, lines: Callable[[], Iterable[str]]) -> None:
        await store_lines(self.layout.backend, self.layout.meta(name), lines, self.on_retry)
