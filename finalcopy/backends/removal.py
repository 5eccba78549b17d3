"""Removing a folder and everything below it through a backend, never following a link.

One helper for every removal of a whole tree that is finalcopy's own: a
rollback's kept entries, a released lock, a benchmark's folder. It lists
the tree with :meth:`Backend.walk` (which never goes through a link), removes
the files several at a time (over SFTP each removal is a round trip), then
the folders, children first, then ``path`` itself.
"""

from __future__ import annotations

import anyio

from finalcopy.backends.base import Backend
from finalcopy.errors import DestinationError, unwrap_group

__all__ = ["REMOVALS_IN_FLIGHT", "remove_tree"]

#: Removals in flight at once: enough to hide an SFTP round trip, few enough for any server.
REMOVALS_IN_FLIGHT = 16


async def remove_tree(backend: Backend, path: str) -> None:
    """Remove ``path`` and everything below it; the first error once every file was tried."""
    entries = await backend.walk(path)
    limiter = anyio.CapacityLimiter(REMOVALS_IN_FLIGHT)
    errors: list[DestinationError] = []

    async def remove(rel: str) -> None:
        async with limiter:
            try:
                await backend.remove(rel)
            except DestinationError as exc:
                errors.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            for rel, st in entries:
                if st.kind != "dir":
                    tg.start_soon(remove, rel)
    except BaseExceptionGroup as group:  # an interruption, as the caller would see it alone
        raise unwrap_group(group) from None
    if errors:
        raise errors[0]
    folders = [rel for rel, st in entries if st.kind == "dir"]
    for rel in sorted(folders, key=lambda rel: -rel.count("/")):  # children first
        await backend.remove(rel)
    await backend.remove(path)
