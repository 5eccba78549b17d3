"""Removing things safely: the verified source at the end, and a failed copy's own writes.

Two rules hold for every removal here:

* nothing under ``ARCHIVES_DIR`` (symlinks resolved), nor anything holding it;
* on the source side, nothing outside the work directory. Project folders are
  vetted once (:class:`DeletionGuard`); below them the walk never follows a
  symbolic link, so every path it reaches is inside.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from finalcopy.backends import Backend
from finalcopy.backends.base import join
from finalcopy.engine import META_DIR
from finalcopy.engine.manifest import StateRecord
from finalcopy.errors import FinalcopyError

LARGE_FILE = 1 << 20


class UnsafeDeletion(FinalcopyError):
    """A removal would reach ARCHIVES_DIR or leave the work directory; nothing was removed."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


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
        if _inside(real, archives) or _inside(archives, real):
            raise UnsafeDeletion(f"refusing to delete '{folder}': it overlaps ARCHIVES_DIR")

    def check_destination(self, backend: Backend, path: str) -> None:
        """Allow writing or removing ``path`` on ``backend`` (local paths only can clash)."""
        if not backend.capabilities.local_path:
            return
        real = Path(backend.root, path).resolve()
        archives = self.archives_dir.resolve()
        if _inside(real, archives) or _inside(archives, real):
            raise UnsafeDeletion(f"'{real}' overlaps ARCHIVES_DIR '{archives}'")


@dataclass
class SourceTree:
    """A local project folder, listed without following links, deepest folders last."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)


def scan_source(root: Path) -> SourceTree:
    tree = SourceTree()
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            for entry in it:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    tree.dirs.append(rel)
                    pending.append(rel)
                elif stat.S_ISREG(st.st_mode):
                    tree.files[rel] = st
                elif stat.S_ISLNK(st.st_mode):
                    tree.links.append(rel)
                else:
                    tree.others.append(rel)
    return tree


def unchanged_since_copy(tree: SourceTree, records: Mapping[str, StateRecord]) -> list[str]:
    """Files whose size and mtime are those the verified copy was made from."""
    out = []
    for rel, st in tree.files.items():
        record = records.get(rel)
        if record and record.size == st.st_size and record.source_mtime_ns == st.st_mtime_ns:
            out.append(rel)
    return out


def delete_source(
    root: Path,
    guard: DeletionGuard,
    deletable: Collection[str],
    links: Collection[str],
    workers: int = 1,
) -> list[str]:
    """Delete ``deletable`` files and ``links`` below ``root``, then empty folders, then ``root``.

    Returns what was kept (relative paths); an empty list means ``root`` is gone.
    Blocking: run it in a worker thread.
    """
    guard.check_source(root)
    tree = scan_source(root)
    allowed = set(deletable)
    keep = [rel for rel in tree.files if rel not in allowed]
    doomed = sorted(allowed & tree.files.keys(), key=lambda r: -tree.files[r].st_size)
    large = [rel for rel in doomed if tree.files[rel].st_size >= LARGE_FILE]
    if workers > 1 and len(large) > 1:
        # Freeing a large file's blocks (or pages, on tmpfs) is kernel work: spread it.
        with ThreadPoolExecutor(min(workers, len(large))) as pool:
            list(pool.map(lambda rel: (root / rel).unlink(), large))
        doomed = doomed[len(large) :]
    for rel in doomed:
        (root / rel).unlink()
    allowed_links = set(links)
    for rel in tree.links:
        if rel in allowed_links:
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


async def remove_tree(backend: Backend, guard: DeletionGuard, path: str) -> None:
    """Remove ``path`` and everything below it on a destination (``replace``: the old copy)."""
    guard.check_destination(backend, path)
    entries = await backend.walk(path)
    for rel, _st in sorted(entries, key=lambda e: (e[1].kind == "dir", -e[0].count("/"))):
        await backend.remove(rel)
    await backend.remove(path)


@dataclass
class Rollback:
    """Undo one project's writes at a destination, and only those.

    Taken before the copy: which entries already existed below ``target``
    and the content of its manifest and state files, which the engine
    rewrites. After a failure, files this run wrote (the engine's
    ``written`` list, plus anything new since the snapshot) are removed, then
    folders it created, and the bookkeeping files are put back as they were.
    """

    backend: Backend
    target: str
    existed: set[str] = field(default_factory=set)
    meta: dict[str, bytes | None] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    @classmethod
    async def snapshot(cls, backend: Backend, target: str, meta_names: list[str]) -> Rollback:
        (st,) = await backend.stat([target])
        existed = {target} if st is not None else set()
        meta: dict[str, bytes | None] = {}
        if st is not None:
            existed.update(p for p, _ in await backend.walk(target))
            for name in meta_names:
                path = join(target, META_DIR, name)
                meta[path] = await backend.read_bytes(path)
        return cls(backend, target, existed, meta)

    async def undo(self, guard: DeletionGuard) -> list[str]:
        """Remove this run's writes; returns what could not be removed (with the reason)."""
        problems: list[str] = []
        guard.check_destination(self.backend, self.target)
        now = await self.backend.walk(self.target)
        new_files = {p for p, st in now if st.kind != "dir" and p not in self.existed}
        meta_prefix = join(self.target, META_DIR) + "/"
        doomed = (set(self.written) | new_files) - set(self.meta)
        if self.existed:
            doomed = {p for p in doomed if not p.startswith(meta_prefix)}
        for path in sorted(doomed):
            try:
                await self.backend.remove(path)
            except FinalcopyError as exc:
                problems.append(str(exc))
        for path, data in self.meta.items():
            try:
                if data is None:
                    await self.backend.remove(path)
                else:
                    await self.backend.write_bytes(path, data)
            except FinalcopyError as exc:
                problems.append(str(exc))
        new_dirs = [p for p, st in now if st.kind == "dir" and p not in self.existed]
        if self.target not in self.existed:
            new_dirs.append(self.target)
        for path in sorted(new_dirs, key=lambda d: -d.count("/")):
            with contextlib.suppress(FinalcopyError):
                await self.backend.remove(path)
        return problems
