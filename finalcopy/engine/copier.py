"""Copy a folder tree to a backend: the story of :func:`copy_tree`, told step by step.

1. **Plan** the source (:mod:`.plan`); refuse a destination inside the source
   and names the destination cannot hold (:mod:`.layout`, which also picks
   temporary names that never equal a planned one).
2. **Decide** what to send: a pure decision over the state records and the
   destination's stats (:mod:`.skip`), after which every file to skip is
   proven by hashing it at the destination (:mod:`.proof`).
3. **Write**, under the destination's lock (:mod:`.lock`): folders, entries
   to replace moved aside (:mod:`.entries`), the files sent and verified
   (:mod:`.transfer`), links, the manifest and the state (:mod:`.ledger`),
   folders sealed.

The clock is injectable (``clock=``, as rich's ``Progress(get_time=...)``):
it times the copy and paces the state checkpoints.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from finalcopy.backends.base import Backend, DestStat
from finalcopy.engine.entries import link_tree, move_aside, seal_tree
from finalcopy.engine.events import EventSink, FileFinished, Listing, Notice, PlanReady, discard
from finalcopy.engine.layout import Layout
from finalcopy.engine.ledger import Ledger
from finalcopy.engine.lock import DestinationLock
from finalcopy.engine.options import Clock, CopyOptions, CopyReport, Reporter
from finalcopy.engine.plan import Listed, Plan, PlannedFile, scan
from finalcopy.engine.proof import compare_hashes, reprove
from finalcopy.engine.skip import hinted_by_records, matching_records, same_size
from finalcopy.engine.source import SourceOpener
from finalcopy.engine.transfer import Transfer
from finalcopy.errors import Interrupted, NoSpaceError, UsageError, unwrap_group
from finalcopy.paths import is_inside


async def copy_tree(
    source: Path,
    backend: Backend,
    options: CopyOptions | None = None,
    *,
    dest: str = "",
    events: EventSink = discard,
    cancel: threading.Event | None = None,
    clock: Clock = time.monotonic,
) -> CopyReport:
    """Copy the folder ``source`` to ``dest`` (relative to the backend's root).

    Returns a report rather than raising for per-file failures; raises
    :class:`~finalcopy.errors.FinalcopyError` when nothing can be copied at all
    (unreadable source, unusable destination, unsafe names, no space).
    Setting ``cancel`` stops the copy cleanly: temporary files are removed,
    what was committed is recorded so a re-run skips it, and the report says
    ``interrupted``.
    """
    options = options or CopyOptions()
    algorithm = options.validate()
    started = clock()
    report = CopyReport(
        str(source), backend.describe(dest), algorithm.name, options.verify, dry_run=options.dry_run
    )
    say = Reporter(report, events)
    cancel = cancel or threading.Event()
    plan = await _list(source, events, cancel)
    check_not_inside(source, backend, dest)
    report.files, report.bytes = len(plan.files), plan.total_bytes
    if backend.strategy:
        events(Notice(message=f"destination strategy: {backend.strategy}"))
    for message in plan.skipped:
        say.warn(message)
    for path, message in plan.unreadable:
        say.fail(path, message)
    layout = Layout(backend, dest, plan)
    ledger = Ledger(layout, algorithm, clock, on_retry=say.retried)
    sources = SourceOpener(
        plan.source_prefix,
        algorithm,
        options.chunk_size,
        cancel,
        options.inspectors,
        options.bwlimit,
        keep_seen=options.keep_proofs,
    )

    if not options.dry_run:
        await backend.prepare()
    todo = await _select(layout, ledger, sources, options, report)
    _announce(todo, ledger, say)
    if not options.dry_run:
        await _check_space(backend, dest, todo)
        await _write(layout, ledger, sources, todo, options, say)
    report.duration = clock() - started
    return report


#: A walk of the source longer than this is shown as it goes, at this pace (a million
#: files take a minute or more to list on a disk; a project, a fraction of a second).
LISTING_SECONDS = 1.0


async def _list(source: Path, events: EventSink, cancel: threading.Event) -> Plan:
    """:func:`scan` in a worker thread, with a :class:`Listing` event every
    :data:`LISTING_SECONDS` while it lasts; ``cancel`` stops it."""
    listed = Listed()

    async def tell() -> None:
        while True:
            await anyio.sleep(LISTING_SECONDS)
            events(Listing(files=listed.files, bytes=listed.bytes))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(tell)
            try:
                plan = await anyio.to_thread.run_sync(scan, source, listed, cancel)
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the walk's error, as the caller would see it alone
        raise unwrap_group(group) from None
    return plan


def check_not_inside(source: Path, backend: Backend, dest: str) -> None:
    """Refuse a destination inside (or equal to) the source: it would copy itself forever."""
    if not backend.capabilities.local_path:
        return
    src = source.resolve()
    dst = Path(backend.root, dest).resolve()
    if is_inside(dst, src):
        raise UsageError(f"destination '{dst}' is inside the source '{src}'")


async def _select(
    layout: Layout,
    ledger: Ledger,
    sources: SourceOpener,
    options: CopyOptions,
    report: CopyReport,
) -> list[PlannedFile]:
    """The files to send, in plan order; every other one is proven and in the ledger."""
    files, algorithm = layout.plan.files, sources.algorithm
    if options.checksum:
        stats = await _stats(layout, files)
        decision = same_size(files, stats)
        trusted = await compare_hashes(decision.candidates, stats, layout, sources)
        if options.keep_proofs:
            report.proven.update((path, r.digest) for path, r in trusted.items())
    else:
        previous = await ledger.previous()
        stats = await _stats(layout, matching_records(files, previous, algorithm.name))
        decision = hinted_by_records(files, previous, stats, algorithm.name)
        hinted = decision.candidates
        if options.verify == "readback":
            proven = await reprove(hinted, previous, layout, algorithm, options.jobs)
            if options.keep_proofs:
                report.proven.update(proven)
            hinted = [f for f in hinted if f.path in proven]
        trusted = {f.path: previous[f.path] for f in hinted}
    ledger.records.update(trusted)
    return [f for f in files if f.path not in trusted]


async def _stats(layout: Layout, files: Sequence[PlannedFile]) -> dict[str, DestStat | None]:
    """What the destination holds at each of ``files``, by plan path."""
    stats = await layout.backend.stat([layout.path(f.path) for f in files])
    return {f.path: st for f, st in zip(files, stats, strict=True)}


def _announce(todo: list[PlannedFile], ledger: Ledger, say: Reporter) -> None:
    """The plan's event, then one ``skipped`` event per file proven without sending it."""
    files, report = ledger.layout.plan.files, say.report
    report.skipped = len(files) - len(todo)
    say.events(
        PlanReady(
            files=len(files),
            bytes=report.bytes,
            to_copy_files=len(todo),
            to_copy_bytes=sum(f.size for f in todo),
        )
    )
    for f in files:
        if (record := ledger.records.get(f.path)) is not None:
            say.events(FileFinished(f.path, f.size, record.digest, outcome="skipped"))


async def _check_space(backend: Backend, dest: str, todo: list[PlannedFile]) -> None:
    free = await backend.free_space(dest)
    needed = sum(f.size for f in todo)
    if free is not None and needed > free:
        raise NoSpaceError(
            f"not enough space on '{backend.describe(dest)}': {needed} bytes to copy, "
            f"{free} available"
        )


async def _write(
    layout: Layout,
    ledger: Ledger,
    sources: SourceOpener,
    todo: list[PlannedFile],
    options: CopyOptions,
    say: Reporter,
) -> None:
    """Under the destination's lock: folders, entries moved aside, files, links, manifest."""
    backend, report = layout.backend, say.report
    transfer = Transfer(layout, sources, ledger, say, options)
    async with contextlib.AsyncExitStack() as held:
        lock = DestinationLock(backend, layout.dest, "copy") if options.lock else None
        if lock is not None:
            await held.enter_async_context(lock)
        await backend.makedirs([layout.path(d.path) for d in layout.plan.dirs])
        try:
            if options.backup_dir:
                await move_aside(layout, todo, options.backup_dir, report)
            await transfer.run(todo, keep_alive=lock.keep_alive if lock else None)
            if sources.cancel.is_set():
                raise Interrupted("interrupted")
            await link_tree(layout, say, keep_written=options.keep_proofs)
            report.digests = ledger.digests()
            report.manifest = await ledger.write_manifest()
            await seal_tree(layout)
        except Interrupted:
            report.interrupted = True
            with anyio.CancelScope(shield=True):
                await ledger.write_state()
    transfer.progress.emit()
