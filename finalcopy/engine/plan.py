"""Walk a source tree into a plan: what to create, copy, link, and what to skip.

The walk is :func:`finalcopy.tree.walk_tree`, shared with the pipeline step
so that what is copied and what is later deleted are listed alike.

Symlinks are recreated as symlinks and never followed; FIFOs, sockets and
devices are skipped with a warning (copying them would block or make no sense).
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from finalcopy.errors import Interrupted, SourceError, describe_os_error
from finalcopy.tree import WalkFailure, walk_tree

#: Folder at the top of a destination holding finalcopy's own files (manifest, state).
META_DIR = ".finalcopy"


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """A regular file to copy, with the size, mode and mtime the walk saw."""

    path: str
    """Relative POSIX path, also the destination path; the source's is
    ``Plan.source_prefix + path`` (not stored: a second string per file was a tenth of a
    large tree's memory)."""
    size: int
    mode: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class PlannedDir:
    """A folder to create (``""``: the source itself), sealed with its mode and mtime."""

    path: str
    mode: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class PlannedLink:
    """A symbolic link to recreate as a link, with its target as read (never followed)."""

    path: str
    target: str


@dataclass
class Plan:
    """Everything under a source folder, in walk order (parents before children)."""

    root: Path
    dirs: list[PlannedDir] = field(default_factory=list)
    files: list[PlannedFile] = field(default_factory=list)
    links: list[PlannedLink] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Warnings: special files skipped, unreadable folders."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, message) of entries that could not be read."""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def source_prefix(self) -> str:
        """What :attr:`root` puts before a relative path, as ``str(root / rel)`` spells it."""
        return "" if str(self.root) == "." else os.path.join(self.root, "")


@dataclass
class Listed:
    """Files and bytes a walk has found so far: written by the walk's thread, read by another."""

    files: int = 0
    bytes: int = 0


def scan(root: Path, listed: Listed | None = None, cancel: threading.Event | None = None) -> Plan:
    """Plan a copy of the folder ``root``; raise :class:`SourceError` if it is unusable.

    ``listed`` is kept up to date as files are found, for a progress display.
    Setting ``cancel`` stops the walk (:class:`Interrupted`): listing millions of
    files takes minutes, and an operator's Ctrl-C must not wait for its end.
    """
    try:
        st = os.stat(root)
    except OSError as exc:
        raise SourceError(f"cannot read source '{root}': {describe_os_error(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source '{root}' is not a folder")
    plan = Plan(root=root)
    plan.dirs.append(PlannedDir("", stat.S_IMODE(st.st_mode), st.st_mtime_ns))

    def unreadable(failure: WalkFailure) -> None:
        what = "folder " if failure.folder else ""
        message = f"cannot read {what}'{failure.path}': {describe_os_error(failure.error)}"
        plan.unreadable.append((failure.rel, message))

    prefix = plan.source_prefix
    listed = listed or Listed()
    for rel, est in walk_tree(root, skip=(META_DIR,), onerror=unreadable):
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted while listing the source")
        mode = est.st_mode
        if stat.S_ISREG(mode):
            plan.files.append(PlannedFile(rel, est.st_size, stat.S_IMODE(mode), est.st_mtime_ns))
            listed.files += 1
            listed.bytes += est.st_size
        elif stat.S_ISDIR(mode):
            plan.dirs.append(PlannedDir(rel, stat.S_IMODE(mode), est.st_mtime_ns))
        elif stat.S_ISLNK(mode):
            plan.links.append(PlannedLink(rel, os.readlink(prefix + rel)))
        else:
            plan.skipped.append(f"skipped special file (FIFO, socket or device): {prefix + rel}")
    return plan
