"""The per-project journal that makes a run crash-safe: ``WORK/.finalcopy/journal/<project>.json``.

Written (atomically, durably) before each phase that a crash must not
confuse, read at the start of every project:

``copying``
    the copy goes to ``target`` on ``destination``; a re-run resumes into
    the same folder instead of choosing a new one (``rename``/``replace``),
    so a project is finalized exactly once.
``swapping``
    (``replace`` only) the new copy is verified; the old one is being removed.
``deleting``
    the copy at ``target`` is verified and durable; the source is being
    deleted. A re-run completes the deletion, removing only files whose
    source and destination both match the manifest, whatever the project
    looks like now (it may no longer look "ready").

The journal lives beside the source, not at the destination: it is the
source that a crash leaves half deleted, and the destination may differ
between runs (fallback).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Phase = Literal["copying", "swapping", "deleting"]


@dataclass(frozen=True)
class JournalEntry:
    project: str
    destination: str
    """The destination string the target lives on."""
    target: str
    """Folder of the copy, relative to the destination root."""
    phase: Phase
    run_id: str
    old: str = ""
    """``replace``: the previous copy being swapped out."""


class Journal:
    """Journal files of one work directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, project: str) -> Path:
        return self.folder / f"{project}.json"

    def read(self, project: str) -> JournalEntry | None:
        try:
            data = json.loads(self.path(project).read_text(encoding="utf-8"))
            return JournalEntry(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # torn or foreign: treated as absent, the copy is resumed anyway

    def write(self, entry: JournalEntry) -> None:
        final = self.path(entry.project)
        tmp = final.with_name(f".{final.name}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        while True:
            try:
                fd = os.open(tmp, flags, 0o644)
                break
            except FileNotFoundError:  # see ProjectLock.acquire
                self.folder.mkdir(parents=True, exist_ok=True)
        try:
            os.write(fd, json.dumps(asdict(entry), ensure_ascii=False).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _sync_dir(self.folder)

    def remove(self, project: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(project).unlink()
            _sync_dir(self.folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
