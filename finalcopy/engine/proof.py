"""Proving that a destination file is right without sending it again: hash it now.

A file is skipped only when this run has hashed the destination's bytes, so
"verified" always means "hashed in this run" and the digest can stand in
:attr:`~finalcopy.engine.options.CopyReport.proven`, the only proof that
counts before a source is deleted. Hashing at the destination (a read-back,
or a hash computed on the SSH server) costs far less than sending the file.

* :func:`reprove`: a file hinted by its state record (:mod:`.skip`) is
  skipped when its bytes still hash to the record's digest;
* :func:`compare_hashes`: with ``--checksum``, both sides are hashed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import anyio.to_thread

from finalcopy.backends.base import DestStat
from finalcopy.engine.layout import Layout
from finalcopy.engine.plan import PlannedFile
from finalcopy.engine.source import SourceOpener
from finalcopy.engine.state import StateRecord
from finalcopy.errors import FinalcopyError
from finalcopy.hashing import Algorithm


async def reprove(
    files: Sequence[PlannedFile],
    records: Mapping[str, StateRecord],
    layout: Layout,
    algorithm: Algorithm,
    jobs: int,
) -> dict[str, str]:
    """Path → digest of the ``files`` whose destination bytes hash to their record's digest now.

    The others are left out, to be copied again; that copy reports the
    destination's error if hashing failed for a reason that persists.
    """
    proven: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(jobs)

    async def one(f: PlannedFile) -> None:
        async with limiter:
            try:
                digest = await layout.backend.hash_file(layout.path(f.path), algorithm)
            except FinalcopyError:
                return
        if digest == records[f.path].digest:
            proven[f.path] = digest

    async with anyio.create_task_group() as tg:
        for f in files:
            tg.start_soon(one, f)
    return proven


async def compare_hashes(
    files: Sequence[PlannedFile],
    stats: Mapping[str, DestStat | None],
    layout: Layout,
    sources: SourceOpener,
) -> dict[str, StateRecord]:
    """``--checksum``: fresh records of the ``files`` whose two sides hash alike.

    ``stats`` (by plan path) gives the destination's mtime for the record.
    """
    algorithm = sources.algorithm
    records: dict[str, StateRecord] = {}
    for f in files:
        source_digest = await anyio.to_thread.run_sync(sources.digest, f)
        dest_digest = await layout.backend.hash_file(layout.path(f.path), algorithm)
        st = stats[f.path]
        if source_digest == dest_digest and st is not None:
            records[f.path] = StateRecord(
                f.path, f.size, f.mtime_ns, st.mtime_ns, algorithm.name, source_digest
            )
    return records
