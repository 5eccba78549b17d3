"""Nothing lost: rollback, replace, re-runs and source deletion keep every byte.

Each test is one way an earlier release lost a finished project or a source
file; each runs on real folders (and the real sshd, and a real exfat-fuse
mount, where the case applies).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finalcopy.backends import Backend, DestinationOptions
from finalcopy.backends.base import temp_name
from finalcopy.engine import Event, FileFinished
from finalcopy.engine.lock import Owner
from finalcopy.finalize import Settings, finalize_sync
from finalcopy.finalize.events import ProjectEvent
from tests.support.cli import run_cli
from tests.support.pipeline import project_files, settings_for
from tests.support.sshd import SshServer
from tests.support.trees import digests
from tests.support.trees import make_tree as write_tree

BROKEN = b'{"frames": [1, 2'


def _sftp(server: SshServer, tmp_path: Path, root: Path, **options: Any) -> Settings:
    url = f"sftp://{server.user}@{server.host}:{server.port}{root}"
    destination = DestinationOptions(
        identity_file=server.client_key, known_hosts=server.known_hosts
    )
    return settings_for(
        tmp_path, tmp_path / "work", output_dir=url, destination=destination, **options
    )


def _settings(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any
) -> Settings:
    """Settings for ``tmp_path/work`` → ``tmp_path/out``, locally or through the real sshd."""
    if kind == "sftp":
        server: SshServer = request.getfixturevalue("sshd_server")
        return _sftp(server, tmp_path, tmp_path / "out", **options)
    return settings_for(tmp_path, tmp_path / "work", **options)


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_failed_merge_keeps_the_earlier_finalized_version(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Case 1: the rollback puts back the file the failed run replaced."""
    work, out = tmp_path / "work", tmp_path / "out"
    write_tree(work / "p", project_files("v", seed=1))
    first = finalize_sync(_settings(kind, tmp_path, request))
    assert first.exit_code == 0, first.to_dict()
    finalized = digests(out / "p")
    manifest = (out / "p" / ".finalcopy" / "manifest.blake3").read_bytes()
    # A new p: the same video name with new content, a new file, a broken tracking JSON.
    files = {**project_files("v", seed=2), "docs/v_tracking.json": BROKEN, "docs/new.bin": b"n"}
    write_tree(work / "p", files)
    report = finalize_sync(_settings(kind, tmp_path, request))
    assert report.projects[0].status == "failed"
    assert digests(out / "p") == finalized, "the only copy of the earlier version survives"
    assert (out / "p" / ".finalcopy" / "manifest.blake3").read_bytes() == manifest
    assert not (out / "p" / ".finalcopy" / "replaced").exists()
    assert digests(work / "p") == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_a_run_never_enters_a_project_another_run_holds(tmp_path: Path) -> None:
    """Case 2: two work directories, one OUTPUT; the second waits its turn, loses nothing."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write_tree(
        a / "p", {**project_files("v", video_size=8 << 20, seed=1), "docs/v_tracking.json": BROKEN}
    )
    write_tree(b / "p", project_files("w", seed=2))
    b_files = digests(b / "p")
    during: list[Any] = []

    def events(event: Event) -> None:
        # While A holds OUTPUT/p (mid-copy), B runs to its end in another thread.
        if (
            during
            or not isinstance(event, ProjectEvent)
            or not isinstance(event.event, FileFinished)
        ):
            return
        settings_b = settings_for(tmp_path / "bb", b, output_dir=str(out))
        thread = threading.Thread(target=lambda: during.append(finalize_sync(settings_b)))
        thread.start()
        thread.join()

    (tmp_path / "bb").mkdir()
    report_a = finalize_sync(settings_for(tmp_path, a), events=events)
    assert report_a.projects[0].status == "failed"
    (report_b,) = during
    assert report_b.projects[0].status == "failed"
    assert "being written by" in report_b.projects[0].reason
    assert digests(b / "p") == b_files, "B's source is kept"
    assert not (out / "p").exists() or digests(out / "p") == {}
    # Once A is done, B finalizes; a failing A afterwards never takes B's files.
    again = finalize_sync(settings_for(tmp_path / "bb", b, output_dir=str(out)))
    assert again.projects[0].status == "finalized"
    assert finalize_sync(settings_for(tmp_path, a)).projects[0].status == "failed"
    assert digests(out / "p") == b_files


def test_a_lock_of_another_host_is_respected_then_recovered_when_stale(tmp_path: Path) -> None:
    """The destination lock is seen across hosts; an abandoned one (no heartbeat) is broken."""
    work, out = tmp_path / "work", tmp_path / "out"
    write_tree(work / "p", project_files())
    lock = out / "p" / ".finalcopy" / "lock"
    lock.mkdir(parents=True)
    owner = Owner("t" * 32, "another-host", "boot", 4242, 1, "2026-11-30T00:00:00", "run")
    (lock / "owner.json").write_bytes(owner.encode())
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "failed"
    assert "another-host" in report.projects[0].reason
    assert (work / "p").is_dir() and (lock / "owner.json").read_bytes() == owner.encode()
    old = 1_000_000_000  # 2001: far older than any heartbeat
    os.utime(lock / "owner.json", (old, old))
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "finalized", report.to_dict()
    assert not lock.exists()


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_a_damaged_destination_file_is_not_trusted(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Case 3: same size, mtime put back: the state record must not stand in for the bytes."""
    work, out = tmp_path / "work", tmp_path / "out"
    write_tree(work / "p", project_files())
    settings = _settings(kind, tmp_path, request)
    dest = settings.output + "/p"
    seeded = run_cli("copy", work / "p", dest, *_ssh_args(kind, request))
    assert seeded.returncode == 0, seeded.stderr
    video = out / "p" / "docs" / "v.mp4"
    st = video.stat()
    video.write_bytes(b"\0" * st.st_size)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    expected = digests(work / "p")
    report = finalize_sync(settings)
    assert report.exit_code == 0, report.to_dict()
    assert digests(out / "p") == expected
    assert run_cli("verify", out / "p").returncode == 0


def _ssh_args(kind: str, request: pytest.FixtureRequest) -> list[str]:
    if kind != "sftp":
        return []
    server: SshServer = request.getfixturevalue("sshd_server")
    return ["--identity", str(server.client_key), "--known-hosts", str(server.known_hosts)]


def test_a_forged_state_digest_is_never_reported_verified(tmp_path: Path) -> None:
    """Issue 9, case 5: ``copy`` re-proves a skipped file; the manifest holds the true digest."""
    src, dst = write_tree(tmp_path / "src", {"a.bin": b"a" * 5000, "b.bin": b"b"}), tmp_path / "dst"
    assert run_cli("copy", src, dst).returncode == 0
    state = dst / ".finalcopy" / "state.jsonl"
    records = [json.loads(line) for line in state.read_text().splitlines()]
    for record in records:
        record["digest"] = "0" * 64
    state.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = run_cli("copy", src, dst)
    assert again.returncode == 0, again.stderr
    manifest = (dst / ".finalcopy" / "manifest.blake3").read_text()
    assert "0" * 64 not in manifest
    assert run_cli("verify", dst).returncode == 0


@pytest.mark.parametrize("kind", ["local", "sftp"])
@pytest.mark.parametrize("policy", ["replace", "merge"])
def test_replace_never_goes_through_a_symlinked_project(
    tmp_path: Path, kind: str, policy: str, request: pytest.FixtureRequest
) -> None:
    """Case 4: OUTPUT/p is a link to a bigger disk: its target is never touched."""
    work, out, elsewhere = tmp_path / "work", tmp_path / "out", tmp_path / "bigdisk" / "p"
    write_tree(elsewhere, {"docs/v.mp4": b"old video", "keep.txt": b"keep"})
    before = digests(elsewhere)
    out.mkdir()
    (out / "p").symlink_to(elsewhere)
    write_tree(work / "p", project_files())
    expected = digests(work / "p")
    report = finalize_sync(_settings(kind, tmp_path, request, on_existing=policy))
    assert digests(elsewhere) == before, "the link's target is untouched"
    if policy == "merge":
        assert report.projects[0].status == "failed"
        assert "symbolic link" in report.projects[0].reason
        assert (out / "p").is_symlink() and (work / "p").is_dir()
        return
    assert report.projects[0].status == "finalized", report.to_dict()
    assert not (out / "p").is_symlink() and digests(out / "p") == expected
    (aside,) = [p for p in out.iterdir() if p.name.startswith("p__replaced_")]
    assert aside.is_symlink() and aside.resolve() == elsewhere.resolve()


@pytest.mark.parametrize("command", ["run", "copy"])
def test_a_source_named_like_a_temporary_file_is_copied_and_kept(
    tmp_path: Path, command: str
) -> None:
    """Case 5: ``.fc-<hash>.part`` beside ``v.mp4`` is a file like any other."""
    work, out = tmp_path / "work", tmp_path / "out"
    files = project_files()
    files[f"docs/{temp_name('v.mp4')}"] = b"a real file that looks temporary" * 1000
    files[f"docs/{temp_name('link')}"] = b"and one named like a link's" * 100
    write_tree(work / "p", files)
    (work / "p" / "docs" / "link").symlink_to("v.mp4")
    expected = digests(work / "p")
    if command == "copy":
        assert run_cli("copy", work / "p", out / "p").returncode == 0
        assert run_cli("copy", work / "p", out / "p").returncode == 0  # and again
    else:
        report = finalize_sync(settings_for(tmp_path, work))
        assert report.exit_code == 0, report.to_dict()
    assert digests(out / "p") == expected
    assert os.readlink(out / "p" / "docs" / "link") == "v.mp4"


def test_a_same_size_rewrite_on_exfat_is_seen_before_deletion(
    exfat_mount: Path, tmp_path: Path
) -> None:
    """Case 6: whole-second mtimes; the rewrite keeps size and mtime; the new bytes stay."""
    work = exfat_mount / "work"
    files = project_files(video_size=1 << 20)
    write_tree(work / "p", files)
    video = work / "p" / "docs" / "v.mp4"
    rewritten = b"R" * len(files["docs/v.mp4"])

    def rewrite_after_copy(event: Event) -> None:
        if (
            isinstance(event, ProjectEvent)
            and isinstance(event.event, FileFinished)
            and event.event.path == "docs/v.mp4"
        ):
            st = video.stat()
            with open(video, "r+b") as f:
                f.write(rewritten)
            os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))

    report = finalize_sync(settings_for(tmp_path, work), events=rewrite_after_copy)
    assert report.projects[0].status == "failed"
    assert video.read_bytes() == rewritten, "the rewritten source is kept"
    assert (tmp_path / "out" / "p" / "docs" / "v.mp4").read_bytes() == files["docs/v.mp4"]


def _plant(work: Path, rel: str, make: Callable[[Path], None]) -> None:
    path = work / ".finalcopy" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)


def test_a_planted_journal_cannot_steer_the_run_outside(tmp_path: Path) -> None:
    """Issue 9, case 3: ``old``/``target`` pointing outside are refused, nothing there moves."""
    work, out = tmp_path / "work", tmp_path / "out"
    write_tree(work / "p", project_files())
    victim = write_tree(tmp_path / "victim", {"precious.txt": b"precious"})
    for forged in (
        {
            "old": "../victim",
            "target": "p__finalized_20260101_000000",
            "phase": "swapping",
            "aside": "../victim2",
        },
        {"target": "../escaped", "phase": "copying"},
        {"target": "../victim", "phase": "deleting"},
    ):
        text = json.dumps({"project": "p", "destination": str(out), "run_id": "x", **forged})
        journal = work / ".finalcopy" / "journal" / "p.json"
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(text)
        report = finalize_sync(settings_for(tmp_path, work))
        assert digests(victim) == {"precious.txt": hashlib.sha256(b"precious").hexdigest()}
        assert not (tmp_path / "escaped").exists()
        assert report.exit_code == 0, report.to_dict()
        assert digests(out / "p") == digests(write_tree(tmp_path / "e", project_files()))
        write_tree(work / "p", project_files())  # the next forged journal, on a fresh project


@pytest.mark.parametrize("folder", ["locks", "journal", "stage"])
def test_work_directory_metadata_is_never_followed_through_links(
    tmp_path: Path, folder: str
) -> None:
    """Issue 9, case 4: a link at WORK/.finalcopy/<folder> is refused; its target untouched."""
    work = tmp_path / "work"
    write_tree(work / "p", project_files())
    victim = write_tree(tmp_path / "victim", {"p.lock": b"keep", "p.json": b"keep"})
    before = digests(victim)
    _plant(work, folder, lambda p: p.symlink_to(victim))
    report = finalize_sync(settings_for(tmp_path, work))
    assert digests(victim) == before
    assert report.projects[0].status == "failed"
    assert "symbolic link" in report.projects[0].reason
    assert (work / "p").is_dir(), "the source is kept"


@pytest.mark.anyio
async def test_a_source_link_goes_only_if_its_copy_points_the_same_way(tmp_path: Path) -> None:
    """Deleting a link loses its target text: it needs a copy that says the same."""
    from finalcopy.backends.local import LocalBackend

    assert await _proven_links(tmp_path, LocalBackend(tmp_path / "out")) == {"same": "v.mp4"}


@pytest.mark.anyio
async def test_over_sftp_a_source_link_goes_only_if_its_copy_is_read_back_the_same(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """Over SFTP too the copy's target is read back, whoever made it: a link re-pointed
    since it was copied is kept, one an earlier run copied is proven."""
    from tests.support.sftp import open_remote

    async with await open_remote(sshd_server, tmp_path, tmp_path / "out") as backend:
        assert await _proven_links(tmp_path, backend) == {"same": "v.mp4"}


async def _proven_links(tmp_path: Path, backend: Backend) -> dict[str, str]:
    """The links ``prove_links`` accepts: one copied as is, one whose copy points elsewhere."""
    from finalcopy.finalize.deletion import DeletionGuard, SourceDeletion
    from finalcopy.finalize.target import DestinationHold
    from finalcopy.hashing import get_algorithm

    src, out = tmp_path / "work" / "p", tmp_path / "out"
    src.mkdir(parents=True)
    (out / "p").mkdir(parents=True)
    for name, mine, theirs in (("same", "v.mp4", "v.mp4"), ("other", "v.mp4", "elsewhere")):
        (src / name).symlink_to(mine)
        (out / "p" / name).symlink_to(theirs)
    deletion = SourceDeletion(
        src, backend, "p", DeletionGuard(src.parent, tmp_path / "archives"),
        DestinationHold(backend), get_algorithm("blake3"), 1,
    )  # fmt: skip
    return await deletion.prove_links(["same", "other", "missing"])
