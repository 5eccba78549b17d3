"""The destination side of one project: which folder it goes to, held under its lock.

``OUTPUT/<project>`` (or a dated ``__finalized_`` sibling, by
``--on-existing``) is held with :class:`~finalcopy.engine.lock.DestinationLock`
from the first write to the last source deletion (:class:`DestinationHold`),
which keeps out runs of other work directories, other hosts and
``finalcopy copy``. The locks are refreshed while they are held and checked
before every destructive step (swap, source deletion, rollback).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import anyio

from finalcopy.backends import Backend
from finalcopy.backends.base import join
from finalcopy.choices import OnExisting
from finalcopy.engine import META_DIR
from finalcopy.engine.lock import HEARTBEAT_SECONDS, DestinationLock
from finalcopy.errors import FinalcopyError, ProjectFailure
from finalcopy.finalize.destination import free_name
from finalcopy.finalize.journal import JournalEntry

MiB = 1 << 20
SPACE_MARGIN_RATIO = 0.05
SPACE_MARGIN_BYTES = 64 * MiB


def stored_path(output: Backend, target: str, rel: str) -> str:
    """Where the source file ``rel`` lives on the destination (names may be mapped)."""
    return output.dest_name(join(target, rel))


class DestinationHold:
    """The destination locks of one project, held from its first write to its last deletion."""

    def __init__(self, output: Backend) -> None:
        self.output = output
        self.locks: list[DestinationLock] = []

    async def acquire(self, folder: str) -> None:
        """Hold the destination folder ``folder`` (see :mod:`finalcopy.engine.lock`)."""
        lock = DestinationLock(self.output, folder, "finalcopy run")
        await lock.acquire()
        self.locks.append(lock)

    async def check(self) -> None:
        """Raise :class:`~finalcopy.engine.lock.LockLost` unless every lock is still ours."""
        for lock in self.locks:
            await lock.check()

    def moved(self, folder: str, new_folder: str) -> None:
        """A held folder was renamed by this run: its lock follows it."""
        for lock in self.locks:
            lock.moved(folder, new_folder)

    async def while_held(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` with the locks' heartbeat beside it; ``body``'s error is raised after."""
        outcome: list[Exception] = []

        async def run_body(scope: anyio.CancelScope) -> None:
            try:
                await body()
            except Exception as exc:
                outcome.append(exc)
            finally:
                scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_body, tg.cancel_scope)
            tg.start_soon(self._heartbeat)
        if outcome:
            raise outcome[0]

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            for lock in list(self.locks):
                # A lost lock is reported by check() before the next destructive step.
                with contextlib.suppress(FinalcopyError):
                    await lock.refresh()

    async def release(self) -> None:
        """Give every lock up (a lock taken over stays with its new holder)."""
        for lock in self.locks:
            with contextlib.suppress(FinalcopyError):
                await lock.release()
        self.locks.clear()


async def choose_target(
    output: Backend,
    project: str,
    policy: OnExisting,
    hold: DestinationHold,
    log: logging.Logger,
    resume: JournalEntry | None = None,
) -> tuple[str, str]:
    """(folder to copy into, previous copy to swap out or ""), with their locks held.

    ``OUTPUT/<project>`` is locked first when it is a real folder, so that
    the choice is made with no other run in it. A link or a file there is
    never entered: merging into it is refused, ``rename`` and ``replace``
    copy beside it (``replace`` then renames the link itself aside). An
    interrupted copy (``resume``) goes on into the folder it had chosen.
    """
    here = output.describe(project)
    (st,) = await output.stat([project])
    if st is None or st.kind == "dir":
        await hold.acquire(project)
    if resume is not None:
        log.info(
            f"Resuming the interrupted finalization of '{project}' into "
            f"'{output.describe(resume.target)}'"
        )
        if resume.target != project:
            await hold.acquire(resume.target)
        return resume.target, resume.old
    (st,) = await output.stat([project])
    existing = st is not None and (st.kind != "dir" or await _has_content(output, project))
    if not existing:
        return project, ""
    if policy == "merge":
        if st is not None and st.kind != "dir":
            raise ProjectFailure(
                f"'{here}' is a {'symbolic link' if st.kind == 'symlink' else st.kind}, not "
                "a folder: refusing to merge into it (use --on-existing rename or replace)"
            )
        log.warning(
            f"Destination '{here}' exists already: merging (files of this project replace "
            "theirs atomically, the replaced ones are kept until the copy is verified)."
        )
        return project, ""
    target = await free_name(output, project, "finalized")
    await hold.acquire(target)
    if policy == "rename":
        log.warning(
            f"Destination '{here}' exists already: this copy goes to '{output.describe(target)}'."
        )
        return target, ""
    log.warning(
        f"Destination '{here}' exists already: once the new copy in "
        f"'{output.describe(target)}' is verified, it takes its name and the previous "
        f"copy is kept as '{project}__replaced_<date>'."
    )
    return target, project


async def _has_content(output: Backend, folder: str) -> bool:
    """Whether ``folder`` holds anything besides finalcopy's lock (which we just made)."""
    lock_dir = join(folder, META_DIR)
    return any(
        path != lock_dir and not path.startswith(lock_dir + "/lock")
        for path, _ in await output.walk(folder)
    )


async def check_space(output: Backend, target: str, files: dict[str, int]) -> None:
    """Project bytes still to copy, plus 5% and 64 MiB, must fit."""
    rels = sorted(files)
    stats = await output.stat([stored_path(output, target, rel) for rel in rels])
    needed = sum(
        files[rel]
        for rel, st in zip(rels, stats, strict=True)
        if st is None or st.size != files[rel]
    )
    if not needed:
        return
    required = int(needed * (1 + SPACE_MARGIN_RATIO)) + SPACE_MARGIN_BYTES
    free = await output.free_space(target)
    if free is not None and free < required:
        raise ProjectFailure(
            f"not enough space on '{output.describe(target)}': {needed} bytes to copy "
            f"(+5% + 64 MiB margin = {required}), {free} available"
        )
