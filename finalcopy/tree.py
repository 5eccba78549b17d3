"""The one walk of a local folder: every entry ``lstat``-ed, no symbolic link ever followed.

Planning a copy (:func:`finalcopy.engine.plan.scan`), listing a project
(:func:`finalcopy.finalize.discovery.list_project`) and listing what a
source deletion may remove (:func:`finalcopy.finalize.deletion.scan_source`)
must see the same tree: a file the plan copies is a file the deletion can
prove, and a link is a link everywhere, so nothing outside the folder is
ever reached through one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WalkFailure:
    """An entry the walk could not read; the walk goes on without it."""

    rel: str
    path: Path
    error: OSError
    folder: bool
    """True when the folder could not be listed; False when one entry could not be stat-ed."""


def walk_tree(
    root: Path,
    *,
    skip: Container[str] = (),
    onerror: Callable[[WalkFailure], None] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative POSIX path, lstat)`` for everything below ``root`` (not ``root`` itself).

    Names are sorted within each folder and a folder is yielded before its
    contents. Folders are entered only when their own ``lstat`` says they
    are folders, so a link to a folder is yielded as a link and never
    entered. ``skip`` names top-level entries to leave out (finalcopy's
    ``.finalcopy``). Errors go to ``onerror``; without it they are raised.
    """
    pending: list[str] = [""]
    while pending:
        rel_dir = pending.pop()
        folder = root / rel_dir if rel_dir else root
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if onerror is None:
                raise
            onerror(WalkFailure(rel_dir, folder, exc, folder=True))
            continue
        subdirs: list[str] = []
        for entry in entries:
            if not rel_dir and entry.name in skip:
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                if onerror is None:
                    raise
                onerror(WalkFailure(rel, Path(entry.path), exc, folder=False))
                continue
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
        pending.extend(reversed(subdirs))
