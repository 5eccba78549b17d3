"""Backend operations on many paths, several at a time, every one tried.

Over SFTP each operation is a round trip or two, so one at a time costs a
tree of a thousand entries seconds per millisecond of latency. Removing a
tree's files (:func:`~finalcopy.backends.removal.remove_tree`) and sealing
its folders (:func:`~finalcopy.engine.entries.seal_tree`) go through
:func:`each_tried`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

from finalcopy.errors import FinalcopyError, unwrap_group

__all__ = ["IN_FLIGHT", "each_tried"]

_T = TypeVar("_T")

#: Operations in flight at once: enough to hide an SFTP round trip, few enough for any server.
IN_FLIGHT = 16


async def each_tried(items: Iterable[_T], operation: Callable[[_T], Awaitable[object]]) -> None:
    """``await operation(item)`` for every item, :data:`IN_FLIGHT` at a time.

    A failing item does not stop the others; the first finalcopy error is
    raised once every item was tried. An interruption is raised as the caller
    would see it alone, not inside an exception group.
    """
    limiter = anyio.CapacityLimiter(IN_FLIGHT)
    errors: list[FinalcopyError] = []

    async def one(item: _T) -> None:
        async with limiter:
            try:
                await operation(item)
            except FinalcopyError as exc:
                errors.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    if errors:
        raise errors[0]
