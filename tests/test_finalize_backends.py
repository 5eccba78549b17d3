"""``finalcopy run`` unchanged on an SFTP server (real sshd) and an NTFS disk (real ntfs-3g)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finalcopy.backends import DestinationOptions
from finalcopy.finalize import Settings, finalize_sync
from tests.support.ntfs import NtfsMount
from tests.support.pipeline import project_files, read_log, settings_for
from tests.support.sshd import SshServer
from tests.support.trees import digests
from tests.support.trees import make_tree as write_tree


def _work(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "projets_extraits"
    write_tree(work / "projet_ok", project_files("video1", video_size=3 << 20))
    broken = {**project_files("b"), "docs/b_tracking.json": b'{"frames": [1, 2'}
    write_tree(work / "projet_corrompu", broken)
    return work, digests(work / "projet_ok")


def _check(settings: Settings, root: Path, expected: dict[str, str], tmp_path: Path) -> None:
    report = finalize_sync(settings)
    assert report.exit_code == 1, report.to_dict()
    status = {p.name: p.status for p in report.projects}
    assert status == {"projet_ok": "finalized", "projet_corrompu": "failed"}
    assert digests(root / "projet_ok") == expected
    assert (root / "projet_ok" / ".finalcopy" / "manifest.blake3").is_file()
    assert not (root / "projet_corrompu").exists(), "rolled back on the destination"
    assert not (settings.work_dir / "projet_ok").exists()
    assert (settings.work_dir / "projet_corrompu").is_dir()
    assert "Projet 'projet_ok' copié avec succès vers" in read_log(tmp_path / "logs")


def test_run_to_sftp(sshd_server: SshServer, tmp_path: Path) -> None:
    work, expected = _work(tmp_path)
    root = tmp_path / "remote"
    url = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{root}"
    root.mkdir()  # the output must exist: it stands for a mounted disk
    options = DestinationOptions(
        identity_file=sshd_server.client_key, known_hosts=sshd_server.known_hosts
    )
    settings = settings_for(tmp_path, work, output_dir=url, destination=options)
    _check(settings, root, expected, tmp_path)


def test_sftp_output_missing_falls_back(sshd_server: SshServer, tmp_path: Path) -> None:
    work, _ = _work(tmp_path)
    url = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{tmp_path / 'nope'}"
    options = DestinationOptions(
        identity_file=sshd_server.client_key, known_hosts=sshd_server.known_hosts
    )
    settings = settings_for(tmp_path, work, output_dir=url, destination=options)
    report = finalize_sync(settings.with_changes(dry_run=True))
    assert report.destination == str(tmp_path / "_finalized_output")
    assert "does not exist" in report.destination_notes[0]


def test_run_to_ntfs(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    work, expected = _work(tmp_path)
    root = Path(ntfs_mount.mountpoint) / "cache"
    root.mkdir()
    settings = settings_for(tmp_path, work, output_dir=str(root))
    _check(settings, root, expected, tmp_path)
    assert "no-metadata" in read_log(tmp_path / "logs") or "NTFS" in read_log(tmp_path / "logs")


@pytest.mark.parametrize("policy", ["replace"])
def test_replace_on_sftp_keeps_a_verified_copy(
    sshd_server: SshServer, tmp_path: Path, policy: str
) -> None:
    work, expected = _work(tmp_path)
    root = tmp_path / "remote"
    write_tree(root / "projet_ok", {"old.txt": b"old"})
    url = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{root}"
    options = DestinationOptions(
        identity_file=sshd_server.client_key, known_hosts=sshd_server.known_hosts
    )
    settings = settings_for(tmp_path, work, output_dir=url, destination=options, on_existing=policy)
    report = finalize_sync(settings)
    done = next(p for p in report.projects if p.name == "projet_ok")
    assert done.status == "finalized"
    landed = Path(done.destination.split(str(sshd_server.port), 1)[1])
    assert landed == root / "projet_ok"  # swapped in by a server-side rename
    assert digests(landed) == expected
    assert not (root / "projet_ok" / "old.txt").exists()
    (aside,) = [p for p in root.iterdir() if p.name != "projet_ok"]
    assert aside.name.startswith("projet_ok__replaced_")
    assert (aside / "old.txt").read_bytes() == b"old", "the previous copy is kept aside"


def test_run_to_ntfs_with_mapped_names(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    """Names NTFS cannot hold are stored mapped; validation and deletion still match them."""
    work = tmp_path / "projets_extraits"
    files = {
        "docs/prise: 1.mp4": b"video bytes",
        "docs/prise: 1.csv": b"No,Timecode In\n",
        "docs/prise: 1_tracking.json": b'{"frames": []}',
        "docs/notes?.txt": b"n",
    }
    write_tree(work / "p", files)
    root = Path(ntfs_mount.mountpoint) / "cache"
    root.mkdir()
    options = DestinationOptions(ntfs_names="map")
    report = finalize_sync(settings_for(tmp_path, work, output_dir=str(root), destination=options))
    assert report.exit_code == 0, report.to_dict()
    assert not (work / "p").exists()
    stored = sorted(p.name for p in (root / "p" / "docs").iterdir())
    assert len(stored) == 4 and not any(":" in n or "?" in n for n in stored)
    assert (root / "p" / ".finalcopy" / "names.tsv").is_file()
