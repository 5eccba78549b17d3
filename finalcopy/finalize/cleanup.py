"""Removing things safely: the verified source at the end, and a failed copy's own writes.

Rules that hold for every removal here:

* nothing under ``ARCHIVES_DIR`` (symlinks resolved), nor anything holding it;
* on the source side, nothing outside the work directory. Project folders are
  vetted once (:class:`DeletionGuard`); below them the walk never follows a
  symbolic link, so every path it reaches is inside;
* a source file is unlinked only if the file there is still the one whose
  bytes were proven equal to the destination's (same identity, checked right
  before the unlink);
* at the destination, a rollback removes only what this run wrote and puts
  back what this run moved aside: never a file that was there before.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from finalcopy.backends import Backend
from finalcopy.backends.base import join
from finalcopy.engine import META_DIR
from finalcopy.engine.source import SourceIdentity
from finalcopy.errors import FinalcopyError

LARGE_FILE = 1 << 20
REPLACED_DIR = f"{META_DIR}/replaced"
"""Below a target: destination entries this run replaced, kept until the project commits."""


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


def delete_source(
    root: Path,
    guard: DeletionGuard,
    proven: Mapping[str, SourceIdentity],
    links: list[str],
    workers: int = 1,
) -> list[str]:
    """Delete the ``proven`` files and ``links`` below ``root``, then empty folders, then ``root``.

    A file is unlinked only if it still has the identity its proof was made
    on (a rewrite or a replacement since is kept). Returns what was kept
    (relative paths); an empty list means ``root`` is gone. Blocking: run it
    in a worker thread.
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


async def remove_tree(backend: Backend, path: str) -> None:
    """Remove ``path`` and everything below it (never following links)."""
    entries = await backend.walk(path)
    for rel, _st in sorted(entries, key=lambda e: (e[1].kind == "dir", -e[0].count("/"))):
        await backend.remove(rel)
    await backend.remove(path)


@dataclass
class Rollback:
    """Put a destination folder back as it was before this run wrote into it.

    Taken before the copy (:meth:`snapshot`): which folders existed, and which
    of finalcopy's own files (manifest, state…) existed — those are copied into
    :data:`REPLACED_DIR` first, since the engine rewrites them. During the
    copy the engine moves every entry it replaces into :data:`REPLACED_DIR`
    too (``CopyOptions.backup_dir``). :meth:`undo` then removes the files this
    run wrote (``written``), moves every kept entry back to its name, and
    removes the folders this run created if they are empty. Nothing this run
    did not write is ever removed, so a rollback cannot take another run's
    files, nor a file a crashed earlier attempt left (its source is still
    there; a later run copies it again).

    :meth:`commit` drops the kept entries once the new copy is verified and
    durable.
    """

    backend: Backend
    target: str
    existed: bool
    dirs: set[str] = field(default_factory=set)
    created_meta: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    undone: bool = False
    """Set once :meth:`undo` restored everything."""

    @property
    def replaced_dir(self) -> str:
        return join(self.target, REPLACED_DIR)

    @classmethod
    async def snapshot(cls, backend: Backend, target: str, meta_names: list[str]) -> Rollback:
        (st,) = await backend.stat([target])
        entries = await backend.walk(target) if st is not None else []
        meta = join(target, META_DIR)
        # The folder the run's own lock created is not "existing content".
        content = [p for p, _ in entries if p != meta and not p.startswith(f"{meta}/lock")]
        rollback = cls(backend, target, existed=bool(content))
        if not content:
            rollback.created_meta = [join(meta, name) for name in meta_names]
            return rollback
        rollback.dirs = {target} | {p for p, s in entries if s.kind == "dir"}
        for name in meta_names:
            path = join(target, META_DIR, name)
            kept = join(rollback.replaced_dir, META_DIR, name)
            data = await backend.read_bytes(path)
            if data is None:
                rollback.created_meta.append(path)
            elif (await backend.stat([kept]))[0] is None:
                await backend.write_bytes(kept, data)
        return rollback

    async def undo(self) -> list[str]:
        """Restore the folder; returns what could not be done (with the reason)."""
        problems: list[str] = []
        root = self.replaced_dir
        kept = {
            join(self.target, p[len(root) + 1 :]): p
            for p, st in await self.backend.walk(root)
            if st.kind != "dir"
        }
        for path in sorted({*self.written, *self.created_meta} - kept.keys()):
            try:
                await self.backend.remove(path)
            except FinalcopyError as exc:
                problems.append(str(exc))
        for final, aside in sorted(kept.items()):
            try:
                await self.backend.remove(final)  # this run's copy; its source is still there
                await self.backend.rename(aside, final)
            except FinalcopyError as exc:
                problems.append(f"{exc} (the previous version is kept in '{aside}')")
        if not problems:
            await self.commit()  # only empty folders are left in it
            await self._drop_empty_dirs()
            self.undone = True
        return problems

    async def commit(self) -> None:
        """The new copy is final: the entries it replaced are no longer needed."""
        with contextlib.suppress(FinalcopyError):
            if (await self.backend.stat([self.replaced_dir]))[0] is not None:
                await remove_tree(self.backend, self.replaced_dir)

    async def _drop_empty_dirs(self) -> None:
        now = [p for p, st in await self.backend.walk(self.target) if st.kind == "dir"]
        created = [p for p in now if p not in self.dirs]
        if not self.existed:
            created.append(self.target)
        for path in sorted(created, key=lambda d: -d.count("/")):
            if path == join(self.target, META_DIR) or path.startswith(
                join(self.target, META_DIR) + "/"
            ):
                continue  # the lock lives there until release; it tidies that folder
            with contextlib.suppress(FinalcopyError):
                await self.backend.remove(path)
