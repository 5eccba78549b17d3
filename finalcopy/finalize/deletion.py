"""Deleting a project's source: decided and done here only, file by file, against fresh proofs.

A source file is unlinked only when **this run** proved that the destination
holds exactly its bytes (docs/run.md, "Proof before deletion"):

* the destination side is the digest the copy read back (or re-proved) in
  this run, else the destination file is hashed now;
* the source side is the digest the copy streamed, if the file provably did
  not change since it was read (:mod:`finalcopy.finalize.changes`), else the
  file is hashed now — after waiting out the file system's timestamp
  granularity, and between two identical ``lstat`` — so that a rewrite
  during the hash is seen;
* right before the unlink, the file must still have the identity the proof
  was made on (a rewrite or a replacement since is kept).

Whatever is removed is inside the work directory and clear of
``ARCHIVES_DIR`` (:class:`DeletionGuard`): the project folder is vetted
once, and below it the walk (:func:`finalcopy.tree.walk_tree`) never follows
a symbolic link, so every path it reaches is inside. The destination lock
is checked right before the first unlink.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from finalcopy.backends import Backend
from finalcopy.engine import CopyReport
from finalcopy.engine.source import SourceIdentity
from finalcopy.errors import FinalcopyError, ProjectFailure, UnsafeDeletion
from finalcopy.finalize.changes import COARSE_NS, granularity_ns, provably_unchanged
from finalcopy.finalize.target import DestinationHold, stored_path
from finalcopy.hashing import Algorithm, hash_path
from finalcopy.paths import is_inside
from finalcopy.tree import walk_tree

LARGE_FILE = 1 << 20


def _link_target(path: Path) -> str | None:
    """Where the symbolic link ``path`` points, None if it is not one (any more)."""
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True)
class DeletionGuard:
    """Where removals are allowed: inside ``work_dir``, never touching ``archives_dir``."""

    work_dir: Path
    archives_dir: Path

    def check_source(self, folder: Path) -> None:
        """Allow removing the project folder ``folder`` (a direct child of the work directory)."""
        work = self.work_dir.resolve()
        archives = self.archives_dir.resolve()
        if folder.is_symlink():
            raise UnsafeDeletion(f"refusing to delete '{folder}': it is a symbolic link")
        real = folder.resolve()
        if real.parent != work:
            raise UnsafeDeletion(f"refusing to delete '{folder}': not inside '{work}'")
        if is_inside(real, archives) or is_inside(archives, real):
            raise UnsafeDeletion(f"refusing to delete '{folder}': it overlaps ARCHIVES_DIR")

    def check_destination(self, backend: Backend, path: str) -> None:
        """Allow writing or removing ``path`` on ``backend`` (local paths only can clash)."""
        if not backend.capabilities.local_path:
            return
        real = Path(backend.root, path).resolve()
        archives = self.archives_dir.resolve()
        if is_inside(real, archives) or is_inside(archives, real):
            raise UnsafeDeletion(f"'{real}' overlaps ARCHIVES_DIR '{archives}'")


@dataclass
class SourceTree:
    """A local project folder, listed without following links."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)


def scan_source(root: Path) -> SourceTree:
    """Everything below ``root``, sorted by kind; an unreadable entry raises ``OSError``."""
    tree = SourceTree()
    for rel, st in walk_tree(root):
        if stat.S_ISDIR(st.st_mode):
            tree.dirs.append(rel)
        elif stat.S_ISREG(st.st_mode):
            tree.files[rel] = st
        elif stat.S_ISLNK(st.st_mode):
            tree.links.append(rel)
        else:
            tree.others.append(rel)
    return tree


def delete_proven(
    root: Path,
    guard: DeletionGuard,
    proven: Mapping[str, SourceIdentity],
    links: Mapping[str, str],
    workers: int = 1,
) -> list[str]:
    """Delete the ``proven`` files and ``links`` below ``root``, then empty folders, then ``root``.

    A file is unlinked only if it still has the identity its proof was made
    on, a link only if it still points where its proven copy does. Returns
    what was kept (relative paths); an empty list means ``root`` is gone.
    Blocking: run it in a worker thread.
    """
    guard.check_source(root)
    tree = scan_source(root)
    doomed = sorted(
        (rel for rel, st in tree.files.items() if proven.get(rel) == SourceIdentity.of(st)),
        key=lambda r: -tree.files[r].st_size,
    )
    keep = sorted(set(tree.files) - set(doomed))

    def unlink(rel: str) -> None:
        path = root / rel
        if SourceIdentity.of(os.lstat(path)) == proven[rel]:
            path.unlink()
        else:
            keep.append(rel)

    large = [rel for rel in doomed if tree.files[rel].st_size >= LARGE_FILE]
    if workers > 1 and len(large) > 1:
        # Freeing a large file's blocks (or pages, on tmpfs) is kernel work: spread it.
        with ThreadPoolExecutor(min(workers, len(large))) as pool:
            list(pool.map(unlink, large))
        doomed = doomed[len(large) :]
    for rel in doomed:
        unlink(rel)
    for rel in tree.links:
        if rel in links and _link_target(root / rel) == links[rel]:
            (root / rel).unlink()
        else:
            keep.append(rel)
    keep.extend(tree.others)
    for rel in sorted(tree.dirs, key=lambda d: -d.count("/")):
        with contextlib.suppress(OSError):
            (root / rel).rmdir()
    try:
        root.rmdir()
    except OSError:
        keep.extend(d for d in tree.dirs if (root / d).exists() and d not in keep)
    return sorted(set(keep))


@dataclass
class SourceDeletion:
    """Delete one project's source against the copy in ``output/target``; see the module doc."""

    source: Path
    output: Backend
    target: str
    guard: DeletionGuard
    hold: DestinationHold
    algorithm: Algorithm
    jobs: int

    async def delete(self, report: CopyReport | None) -> None:
        """Delete every source item proven in this run; :class:`ProjectFailure` if any is kept.

        ``report`` is this run's copy, None when finishing an earlier run's
        deletion (then every file is hashed on both sides).
        """
        tree = await anyio.to_thread.run_sync(scan_source, self.source)
        proven = await self.prove(tree, report)
        links = await self.prove_links(tree.links)
        await self.hold.check()
        kept = await anyio.to_thread.run_sync(
            delete_proven, self.source, self.guard, proven, links, self.jobs
        )
        if kept:
            raise ProjectFailure(
                f"the copy in '{self.output.describe(self.target)}' is complete, but {len(kept)} "
                f"source item(s) were kept because they are not part of it (changed or added "
                f"meanwhile?), e.g. '{kept[0]}'; move them away, and the next run completes "
                "the deletion"
            )

    def _stored(self, rel: str) -> str:
        return stored_path(self.output, self.target, rel)

    async def prove_links(self, links: list[str]) -> dict[str, str]:
        """Source links whose copy is a link to the same target, with that target.

        Each copy is read back from the destination (a link's target is its
        content): a source link re-pointed since it was copied is not proven.
        """
        proven: dict[str, str] = {}
        for rel in links:
            mine = _link_target(self.source / rel)
            with contextlib.suppress(FinalcopyError):
                if mine is not None and await self.output.read_link(self._stored(rel)) == mine:
                    proven[rel] = mine
        return proven

    async def prove(self, tree: SourceTree, report: CopyReport | None) -> dict[str, SourceIdentity]:
        """Source files proven in this run to hold the destination's bytes, with their identity."""
        margin = await anyio.to_thread.run_sync(granularity_ns, self.source)
        theirs = dict(report.proven) if report else {}
        limiter = anyio.CapacityLimiter(self.jobs)
        proven: dict[str, SourceIdentity] = {}

        async def hash_destination(rel: str) -> None:
            async with limiter:
                with contextlib.suppress(FinalcopyError):
                    theirs[rel] = await self.output.hash_file(self._stored(rel), self.algorithm)

        async with anyio.create_task_group() as tg:
            for rel in tree.files:
                if rel not in theirs:
                    tg.start_soon(hash_destination, rel)

        rehash: list[str] = []
        for rel, st in tree.files.items():
            seen = report.seen.get(rel) if report else None
            if report and seen and provably_unchanged(seen, st, margin):
                if report.digests.get(rel) == theirs.get(rel) is not None:
                    proven[rel] = SourceIdentity.of(st)
            elif rel in theirs:
                rehash.append(rel)
        if not rehash:
            return proven
        newest = max(max(tree.files[r].st_mtime_ns, tree.files[r].st_ctime_ns) for r in rehash)
        wait = (newest + (margin or COARSE_NS) - time.time_ns()) / 1e9
        if wait > 0:
            await anyio.sleep(wait)  # a rewrite from now on moves the timestamps

        def check(rel: str) -> None:
            path = self.source / rel
            try:
                before = SourceIdentity.of(os.lstat(path))
                digest = hash_path(path, self.algorithm)
                after = SourceIdentity.of(os.lstat(path))
            except OSError:
                return
            if before == after == SourceIdentity.of(tree.files[rel]) and digest == theirs[rel]:
                proven[rel] = after

        async def one(rel: str) -> None:
            async with limiter:
                await anyio.to_thread.run_sync(check, rel)

        async with anyio.create_task_group() as tg:
            for rel in rehash:
                tg.start_soon(one, rel)
        return proven
