"""Which planned files a copy must send: a pure decision, no I/O.

A state record (``state.jsonl``, :mod:`.state`) says a file was copied and
verified from a source of that size and mtime, and what the destination's
size and mtime were right after. A file whose record matches the source as
planned and the destination as it stands now is **hinted**: probably there
already. A hint is never a proof (records can be forged; files rot or are
restored with their old mtimes): with ``--verify readback`` the copy hashes
each hinted file at the destination before it skips it (:mod:`.proof`).
With ``--checksum`` no record is trusted at all: every file of the source's
size at the destination is a candidate, and hashes of both sides decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from finalcopy.backends.base import DestStat
from finalcopy.engine.plan import PlannedFile
from finalcopy.engine.state import StateRecord


@dataclass(frozen=True)
class Decision:
    """The plan's files split in two, each in plan order."""

    send: list[PlannedFile]
    """Copied again."""
    candidates: list[PlannedFile]
    """Skipped once proven: hinted by their record, or (``--checksum``) of the right size."""


def matching_records(
    files: Sequence[PlannedFile], records: Mapping[str, StateRecord], algorithm: str
) -> list[PlannedFile]:
    """The files whose record matches the source as planned: the only ones worth a ``stat``."""
    return [
        f
        for f in files
        if (r := records.get(f.path)) is not None
        and r.algorithm == algorithm
        and r.size == f.size
        and r.source_mtime_ns == f.mtime_ns
    ]


def hinted_by_records(
    files: Sequence[PlannedFile],
    records: Mapping[str, StateRecord],
    stats: Mapping[str, DestStat | None],
    algorithm: str,
) -> Decision:
    """Candidates are the hinted files: their record matches the source and the destination.

    The destination, ``stats`` by plan path, must still be the regular file of
    the size and mtime the record says the copy left there.
    """
    hinted = {
        f.path
        for f in matching_records(files, records, algorithm)
        if (st := stats.get(f.path)) is not None
        and st.kind == "file"
        and st.size == records[f.path].size
        and st.mtime_ns == records[f.path].dest_mtime_ns
    }
    return _split(files, hinted)


def same_size(files: Sequence[PlannedFile], stats: Mapping[str, DestStat | None]) -> Decision:
    """``--checksum``: candidates have a regular file of their size at the destination.

    ``stats`` is by plan path; the hashes of both sides then decide.
    """
    same = {
        f.path
        for f in files
        if (st := stats.get(f.path)) is not None and st.kind == "file" and st.size == f.size
    }
    return _split(files, same)


def _split(files: Sequence[PlannedFile], candidates: set[str]) -> Decision:
    return Decision(
        send=[f for f in files if f.path not in candidates],
        candidates=[f for f in files if f.path in candidates],
    )
