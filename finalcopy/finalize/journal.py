"""The per-project journal that makes a run crash-safe: ``WORK/.finalcopy/journal/<project>.json``.

Written (atomically, durably) before each phase that a crash must not
confuse, read at the start of every project:

``copying``
    the copy goes to ``target`` on ``destination``; a re-run resumes into
    the same folder instead of choosing a new one (``rename``/``replace``),
    so a project is finalized exactly once. Destination files the copy
    replaces wait in ``<target>/.finalcopy/replaced/`` until the project
    commits; a failure (of this run or of a re-run) puts them back.
``swapping``
    (``replace`` only) the new copy in ``target`` is verified; the previous
    copy ``old`` is being renamed to ``aside`` and ``target`` to ``old``.
    A re-run finishes both renames.
``deleting``
    the copy at ``target`` is verified and durable; the source is being
    deleted. A re-run completes the deletion, removing only files whose
    source and destination bytes it hashes equal itself, whatever the project
    looks like now (it may no longer look "ready").

The journal lives beside the source, not at the destination: it is the
source that a crash leaves half deleted, and the destination may differ
between runs (fallback).

The journal owns its phases: :class:`ProjectJournal` records them for one
project, decides what an earlier run left to resume
(:meth:`ProjectJournal.resume_point`, :meth:`Journal.finishing`) and when
the journal must outlive a failure; :meth:`Journal.forget_stale` drops the
journals whose deletion completed.

A journal file is untrusted input (anyone who can write the work directory
can plant one): an entry is used only if every field is one this run could
have written for this project — the folder names are re-derived from the
project's name, the destination must be this run's — else it is ignored
with a warning, and the project is copied afresh (which deletes nothing
without a fresh proof).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from finalcopy.errors import FinalcopyError, ProjectFailure
from finalcopy.finalize.metadir import private_dir
from finalcopy.smallfiles import read_small_at, sync_dir, write_atomic_at

Phase = Literal["copying", "swapping", "deleting"]
MAX_BYTES = 64 * 1024
_STAMP = r"_\d{8}_\d{6}(?:_\d+)?"


@dataclass(frozen=True)
class JournalEntry:
    """One project's last recorded phase: what a re-run resumes or finishes."""

    project: str
    destination: str
    """The destination string the target lives on."""
    target: str
    """Folder of the copy, relative to the destination root."""
    phase: Phase
    run_id: str
    old: str = ""
    """``replace``: the previous copy, to be renamed to ``aside``."""
    aside: str = ""
    """``replace``: the name the previous copy is kept under."""

    @property
    def finishing(self) -> bool:
        """Past ``copying``: the copy is verified and durable, only the swap and deletion remain."""
        return self.phase != "copying"

    @property
    def swap_pending(self) -> bool:
        """``replace`` was renaming the copies: the renames are finished before the deletion."""
        return self.phase == "swapping"


def derived_names_ok(entry: JournalEntry) -> bool:
    """Whether every folder name in ``entry`` is one finalcopy derives from the project's."""
    name = re.escape(entry.project)
    return (
        bool(re.fullmatch(f"{name}(?:__finalized{_STAMP})?", entry.target))
        and entry.old in ("", entry.project)
        and (entry.aside == "" or bool(re.fullmatch(f"{name}__replaced{_STAMP}", entry.aside)))
        and (entry.phase != "swapping" or bool(entry.old and entry.aside))
    )


def parse_entry(data: bytes, project: str) -> JournalEntry | None:
    """The entry in ``data`` if it is well formed and belongs to ``project``."""
    try:
        raw: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict) or set(raw) - set(JournalEntry.__dataclass_fields__):
        return None
    if not all(isinstance(v, str) for v in raw.values()):
        return None
    try:
        entry = JournalEntry(**raw)
    except TypeError:
        return None
    if entry.project != project or entry.phase not in get_args(Phase):
        return None
    return entry if derived_names_ok(entry) else None


class Journal:
    """Journal files of one work directory (``work_dir/.finalcopy/journal/``)."""

    PARTS = (".finalcopy", "journal")

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.folder = work_dir.joinpath(*self.PARTS)
        self.problems: list[str] = []
        """Entries ignored as malformed or foreign, one line each, for the log."""

    @staticmethod
    def file_name(project: str) -> str:
        return f"{project}.json"

    def read(self, project: str) -> JournalEntry | None:
        if not self.folder.parent.is_dir():
            return None
        with private_dir(self.work_dir, *self.PARTS) as fd:
            data = read_small_at(fd, self.file_name(project), MAX_BYTES)
        if data is None:
            return None
        entry = parse_entry(data, project) if len(data) <= MAX_BYTES else None
        if entry is None:
            self.problems.append(
                f"ignored the journal '{self.folder / self.file_name(project)}': malformed or "
                "not one this project's run writes; the project is copied afresh"
            )
        return entry

    def write(self, entry: JournalEntry) -> None:
        data = json.dumps(asdict(entry), ensure_ascii=False).encode("utf-8")
        with private_dir(self.work_dir, *self.PARTS) as fd:
            write_atomic_at(fd, self.file_name(entry.project), data)

    def remove(self, project: str) -> None:
        if not self.folder.parent.is_dir():
            return
        with private_dir(self.work_dir, *self.PARTS) as fd, contextlib.suppress(FileNotFoundError):
            os.unlink(self.file_name(project), dir_fd=fd)
            sync_dir(fd)

    def projects(self) -> list[str]:
        """Projects that have a journal file."""
        if not self.folder.parent.is_dir():
            return []
        with private_dir(self.work_dir, *self.PARTS) as fd:
            return [n[:-5] for n in os.listdir(fd) if n.endswith(".json") and n[:-5]]

    def finishing(self, project: str) -> bool:
        """Whether a run stopped while swapping in or deleting ``project``'s verified copy.

        Such a project is finalized whatever is left of its source looks like:
        the deletion may have removed the files that made it "ready".
        """
        entry = self.read(project)
        return entry is not None and entry.finishing

    def forget_stale(self) -> None:
        """Drop the journals of projects whose folder is gone: their deletion completed."""
        with contextlib.suppress(OSError, FinalcopyError):
            for project in self.projects():
                if not os.path.lexists(self.work_dir / project):
                    self.remove(project)


class ProjectJournal:
    """One project's journal as its finalization records it, phase by phase.

    Once the copy is final (``deleting`` recorded, or an earlier run's
    ``swapping``/``deleting`` taken up) the journal outlives any failure:
    part of the source may be gone, and the next run must finish against
    the same verified copy, never start a fresh one.
    """

    def __init__(self, journal: Journal, project: str, destination: str, run_id: str) -> None:
        self.journal = journal
        self.project = project
        self.destination = destination
        self.run_id = run_id
        self.must_finish = False
        """The journal must survive a failure (see the class docstring)."""

    def resume_point(self) -> JournalEntry | None:
        """What an earlier run left to resume on this destination; None to start afresh.

        A ``copying`` entry resumes the copy into the same folder; a
        finishing one (:attr:`JournalEntry.finishing`) is finished without
        copying. An interrupted copy to another destination is abandoned (its
        source is intact); a finishing one there is refused, since only that
        destination holds the verified copy.
        """
        entry = self.journal.read(self.project)
        if entry is None:
            return None
        if entry.destination != self.destination:
            if entry.finishing:
                raise ProjectFailure(
                    f"an earlier run was finishing this project on '{entry.destination}', "
                    f"which is not this run's destination; run again with "
                    f"OUTPUT_DIR={entry.destination}"
                )
            return None  # an interrupted copy elsewhere: start afresh here
        if entry.finishing:
            self.must_finish = True
        return entry

    def copying(self, target: str, old: str) -> None:
        """The copy goes to ``target`` (and, for ``replace``, will take ``old``'s name)."""
        self._record("copying", target, old)

    def swapping(self, target: str, old: str, aside: str) -> None:
        """``replace``: ``old`` is renamed to ``aside`` and the verified ``target`` to ``old``."""
        self._record("swapping", target, old, aside)

    def deleting(self, target: str) -> None:
        """The copy at ``target`` is verified and durable: the source is being deleted."""
        self._record("deleting", target, "")
        self.must_finish = True

    def failed(self) -> bool:
        """The project failed: forget the journal unless it must outlive this; True if kept."""
        if self.must_finish:
            return True
        self.journal.remove(self.project)
        return False

    def finished(self) -> None:
        """The source is deleted: nothing is left to resume."""
        self.journal.remove(self.project)

    def _record(self, phase: Phase, target: str, old: str, aside: str = "") -> None:
        self.journal.write(
            JournalEntry(
                project=self.project,
                destination=self.destination,
                target=target,
                phase=phase,
                run_id=self.run_id,
                old=old,
                aside=aside,
            )
        )
