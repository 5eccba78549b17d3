"""Walk a source tree into a plan: what to create, copy, link, and what to skip.

Symlinks are recreated as symlinks and never followed; FIFOs, sockets and
devices are skipped with a warning (copying them would block or make no sense).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from finalcopy.errors import SourceError, describe_os_error

#: Folder at the top of a destination holding finalcopy's own files (manifest, state).
META_DIR = ".finalcopy"


@dataclass(frozen=True)
class PlannedFile:
    path: str
    """Relative POSIX path, also the destination path."""
    source: Path
    size: int
    mode: int
    mtime_ns: int


@dataclass(frozen=True)
class PlannedDir:
    path: str
    mode: int
    mtime_ns: int


@dataclass(frozen=True)
class PlannedLink:
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


def scan(root: Path) -> Plan:
    """Plan a copy of the folder ``root``; raise :class:`SourceError` if it is unusable."""
    try:
        st = os.stat(root)
    except OSError as exc:
        raise SourceError(f"cannot read source '{root}': {describe_os_error(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source '{root}' is not a folder")
    plan = Plan(root=root)
    plan.dirs.append(PlannedDir("", stat.S_IMODE(st.st_mode), st.st_mtime_ns))
    pending: list[tuple[str, Path]] = [("", root)]
    while pending:
        rel_dir, abs_dir = pending.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            message = f"cannot read folder '{abs_dir}': {describe_os_error(exc)}"
            plan.unreadable.append((rel_dir, message))
            continue
        subdirs: list[tuple[str, Path]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not rel_dir and entry.name == META_DIR:
                continue
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError as exc:
                message = f"cannot read '{entry.path}': {describe_os_error(exc)}"
                plan.unreadable.append((rel, message))
                continue
            mode = est.st_mode
            if stat.S_ISREG(mode):
                plan.files.append(
                    PlannedFile(
                        rel, Path(entry.path), est.st_size, stat.S_IMODE(mode), est.st_mtime_ns
                    )
                )
            elif stat.S_ISDIR(mode):
                plan.dirs.append(PlannedDir(rel, stat.S_IMODE(mode), est.st_mtime_ns))
                subdirs.append((rel, Path(entry.path)))
            elif stat.S_ISLNK(mode):
                plan.links.append(PlannedLink(rel, os.readlink(entry.path)))
            else:
                plan.skipped.append(f"skipped special file (FIFO, socket or device): {entry.path}")
        pending.extend(reversed(subdirs))
    return plan
