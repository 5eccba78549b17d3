"""The finalize step's boundaries: the journal's phases, the one tree walker, the shared helpers.

Each helper here is the single place of its rule, so each rule is proven
once, on real folders: the journal decides what a re-run resumes and when it
must outlive a failure; the walker never enters a link and is what the copy,
discovery and deletion all see; small files are replaced atomically and
never read through a planted link or FIFO.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from finalcopy.engine.lock import Owner
from finalcopy.engine.plan import scan
from finalcopy.errors import ProjectFailure
from finalcopy.finalize import finalize_sync
from finalcopy.finalize.deletion import scan_source
from finalcopy.finalize.discovery import list_project
from finalcopy.finalize.journal import Journal, ProjectJournal
from finalcopy.paths import is_inside, nearest_existing
from finalcopy.smallfiles import read_small_at, write_atomic, write_atomic_at
from finalcopy.tree import WalkFailure, walk_tree
from tests.support.pipeline import project_files, settings_for
from tests.support.trees import make_tree as write_tree

# -- the journal owns its phases ---------------------------------------------------


def _journal(work: Path, destination: str = "/out") -> ProjectJournal:
    return ProjectJournal(Journal(work), "p", destination, "run1")


def test_a_journal_past_copying_outlives_a_failure_and_marks_the_project_finishing(
    tmp_path: Path,
) -> None:
    (tmp_path / "p").mkdir()
    recorder = _journal(tmp_path)
    recorder.copying("p", "")
    assert not Journal(tmp_path).finishing("p")
    assert recorder.failed() is False  # before the copy is final: forgotten, source intact
    assert Journal(tmp_path).read("p") is None

    recorder.copying("p__finalized_20260101_000000", "p")
    recorder.swapping("p__finalized_20260101_000000", "p", "p__replaced_20260101_000000")
    assert Journal(tmp_path).finishing("p")
    recorder.deleting("p")
    assert recorder.failed() is True  # part of the source may be gone: kept for the re-run
    again = _journal(tmp_path)
    entry = again.resume_point()
    assert entry is not None and entry.finishing and not entry.swap_pending
    assert again.must_finish  # taken up: it outlives this run's failures too
    again.finished()
    assert Journal(tmp_path).projects() == []


def test_a_journal_of_another_destination_is_abandoned_or_refused(tmp_path: Path) -> None:
    _journal(tmp_path, "/elsewhere").copying("p", "")
    assert _journal(tmp_path).resume_point() is None  # an interrupted copy: start afresh
    _journal(tmp_path, "/elsewhere").deleting("p")
    with pytest.raises(ProjectFailure, match="OUTPUT_DIR=/elsewhere"):
        _journal(tmp_path).resume_point()  # only that destination holds the verified copy


def test_malformed_journals_are_ignored_and_stale_ones_forgotten(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    folder = tmp_path / ".finalcopy" / "journal"
    folder.mkdir(parents=True)
    (folder / "p.json").write_text(json.dumps({"project": "p", "phase": "deleting"}))
    assert not journal.finishing("p") and len(journal.problems) == 1
    (tmp_path / "p").mkdir()
    (tmp_path / "q").mkdir()
    ProjectJournal(journal, "q", "/out", "r").deleting("q")
    ProjectJournal(journal, "gone", "/out", "r").deleting("gone")
    journal.forget_stale()
    assert sorted(journal.projects()) == ["p", "q"]  # only the folder-less one is dropped


def test_a_deletion_left_unfinished_behind_a_held_lock_is_finished_later(tmp_path: Path) -> None:
    """The journal says ``deleting`` and the copy is held by a live run elsewhere: the
    project fails, but its journal stays, so a later run still finishes the deletion
    although what is left of the source no longer looks ready."""
    work, out = tmp_path / "work", tmp_path / "out"
    files = project_files()
    write_tree(out / "p", files)
    write_tree(work / "p", {"logs/run.log": files["logs/run.log"]})  # the video is gone
    ProjectJournal(Journal(work), "p", str(out), "earlier").deleting("p")
    lock = out / "p" / ".finalcopy" / "lock"
    lock.mkdir(parents=True)
    owner = Owner("t" * 32, "another-host", "boot", 4242, 1, "2026-11-30T00:00:00", "run")
    (lock / "owner.json").write_bytes(owner.encode())

    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "failed", report.to_dict()
    assert Journal(work).finishing("p")
    assert (work / "p" / "logs" / "run.log").is_file()

    os.utime(lock / "owner.json", (1_000_000_000, 1_000_000_000))  # abandoned long ago
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "finalized", report.to_dict()
    assert not (work / "p").exists() and Journal(work).projects() == []
    assert (out / "p" / "docs" / "v.mp4").read_bytes() == files["docs/v.mp4"]


# -- one tree walker ---------------------------------------------------------------


def _odd_tree(root: Path, outside: Path) -> Path:
    write_tree(root, {"a/b.txt": b"b", "a/c/d.txt": b"d", "top.txt": b"t", ".finalcopy/m": b"m"})
    write_tree(outside, {"secret.txt": b"s"})
    (root / "a" / "into").symlink_to(outside)
    (root / "link.txt").symlink_to(root / "top.txt")
    os.mkfifo(root / "a" / "fifo")
    return root


def test_the_walk_never_enters_a_link_and_lists_parents_first(tmp_path: Path) -> None:
    root = _odd_tree(tmp_path / "src", tmp_path / "outside")
    rels = [rel for rel, _ in walk_tree(root, skip=(".finalcopy",))]
    assert rels == ["a", "link.txt", "top.txt", "a/b.txt", "a/c", "a/fifo", "a/into", "a/c/d.txt"]
    assert not any("secret" in rel for rel in rels)
    failures: list[WalkFailure] = []
    assert list(walk_tree(tmp_path / "missing", onerror=failures.append)) == []
    assert failures[0].folder and failures[0].rel == ""
    with pytest.raises(FileNotFoundError):
        list(walk_tree(tmp_path / "missing"))


def test_copy_discovery_and_deletion_list_the_same_files(tmp_path: Path) -> None:
    root = _odd_tree(tmp_path / "src", tmp_path / "outside")
    planned = {f.path for f in scan(root).files}
    assert planned == set(list_project(root).files) == {"a/b.txt", "a/c/d.txt", "top.txt"}
    tree = scan_source(root)  # deletion sees finalcopy's folder too: it is not copied, so kept
    assert set(tree.files) == planned | {".finalcopy/m"}
    assert sorted(tree.links) == ["a/into", "link.txt"] and tree.others == ["a/fifo"]


# -- containment, nearest existing ancestor, small files ----------------------------


def test_containment_is_by_component_and_the_nearest_existing_ancestor_is_absolute(
    tmp_path: Path,
) -> None:
    assert is_inside(Path("/data/archives/p"), Path("/data/archives"))
    assert is_inside(Path("/data/archives"), Path("/data/archives"))
    assert not is_inside(Path("/data/archives2"), Path("/data/archives"))
    assert nearest_existing(tmp_path / "x" / "y") == tmp_path
    assert nearest_existing(Path("no-such-folder")) == Path.cwd()


def test_small_files_are_replaced_whole_and_never_read_through_a_planted_entry(
    tmp_path: Path,
) -> None:
    write_atomic(tmp_path / "logs" / "status.json", b"one")
    write_atomic(tmp_path / "logs" / "status.json", b"two")
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["status.json"]
    victim = write_tree(tmp_path / "victim", {"v": b"keep"})
    (tmp_path / "logs" / "link").symlink_to(victim / "v")
    os.mkfifo(tmp_path / "logs" / "fifo")
    fd = os.open(tmp_path / "logs", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_small_at(fd, "status.json", 2) == b"two"
        assert read_small_at(fd, "status.json", 1) == b"tw"  # one past the limit: too long
        assert read_small_at(fd, "link", 10) is None
        assert read_small_at(fd, "fifo", 10) is None  # and it did not hang
        assert read_small_at(fd, "missing", 10) is None
        write_atomic_at(fd, "link", b"new")  # the link itself is replaced, never written through
    finally:
        os.close(fd)
    assert (victim / "v").read_bytes() == b"keep"
    assert (tmp_path / "logs" / "link").read_bytes() == b"new"
    shutil.rmtree(victim)


# -- the lock's release ------------------------------------------------------------


def test_a_crash_while_releasing_a_lock_never_leaves_a_lock_without_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed halfway through emptying its lock, a run must not leave ``lock/``
    without ``owner.json``: nobody could tell it from a live holder's until it
    went stale (15 minutes), and the next run would refuse the destination."""
    from finalcopy.backends.local import LocalBackend
    from finalcopy.engine.lock import DestinationLock

    class Killed(BaseException):
        """Stands for kill -9: nothing after it runs."""

    async def scenario() -> None:
        async with LocalBackend(tmp_path) as backend:
            lock = DestinationLock(backend, "dest", "copy")
            await lock.acquire()
            removed: list[str] = []
            real_remove = backend.remove

            async def remove_then_die(path: str) -> None:
                await real_remove(path)
                removed.append(path)
                raise Killed  # after the first removal: owner.json gone, its folder not

            monkeypatch.setattr(backend, "remove", remove_then_die)
            with pytest.raises(Killed):
                await lock.release()
            assert removed and removed[0].endswith("owner.json")
            monkeypatch.setattr(backend, "remove", real_remove)
            # The next run takes the lock at once.
            await DestinationLock(backend, "dest", "copy").acquire()

    anyio.run(scenario)
    assert (tmp_path / "dest" / ".finalcopy" / "lock" / "owner.json").is_file()


def test_a_stale_lock_whose_moved_owner_cannot_be_read_is_given_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breaking a stale lock without a readable owner: once moved aside, its owner is read
    again; a read error there proves nothing (a live run may have taken the lock meanwhile),
    so the lock is put back, never removed."""
    from finalcopy.backends.local import LocalBackend
    from finalcopy.engine.lock import STALE_SECONDS, DestinationLock
    from finalcopy.errors import DestinationError, DestinationLocked

    lock_dir = tmp_path / "dest" / ".finalcopy" / "lock"
    lock_dir.mkdir(parents=True)
    (lock_dir / "owner.json").write_text("not json")  # no owner to judge: stale by age
    old = time.time() - STALE_SECONDS - 60
    for path in (lock_dir / "owner.json", lock_dir):
        os.utime(path, (old, old))

    async def scenario() -> None:
        async with LocalBackend(tmp_path) as backend:
            real_read = backend.read_bytes

            async def read_bytes(path: str) -> bytes | None:
                if ".finalcopy/lock.stale-" in path:
                    raise DestinationError(f"cannot read '{path}': Input/output error")
                return await real_read(path)

            monkeypatch.setattr(backend, "read_bytes", read_bytes)
            with pytest.raises(DestinationLocked):
                await DestinationLock(backend, "dest", "copy").acquire()

    anyio.run(scenario)
    assert (lock_dir / "owner.json").read_text() == "not json"
