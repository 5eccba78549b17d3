"""The no-metadata (NTFS) backend: strategy choice, Windows names, and real ntfs-3g mounts.

The mount tests copy onto a fresh ntfs-3g volume (type fuseblk) per test, as
the operator would: through the CLI in a subprocess, and as another user on a
volume mounted for someone else, where chmod/utime really fail with EPERM.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from finalcopy.backends import DestinationOptions, open_backend
from finalcopy.backends.base import FileTransfer
from finalcopy.backends.local import NoMetadataBackend
from finalcopy.backends.local.nometadata import FUSE_BLOCK
from finalcopy.backends.local.ntfs_names import (
    add_suffix,
    check_names,
    decode_name,
    decode_path,
    encode_name,
    fold_case,
    name_reasons,
)
from finalcopy.backends.local.strategy import choose_strategy, filesystem_type, probe_metadata
from finalcopy.engine import CopyOptions, copy_tree, verify_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.engine.state import format_names, parse_names
from finalcopy.errors import UnsafeNameError
from finalcopy.hashing import get_algorithm
from tests.support.cli import run_cli
from tests.support.fixtures import require_part, require_tool
from tests.support.ntfs import NtfsMount
from tests.support.trees import make_tree, tree_content
from tests.support.users import LocalUser, acting_as

MiB = 1024 * 1024
BLAKE3 = get_algorithm("blake3")
#: Text that must never reach an operator on an NTFS destination.
NOISE = (
    "Traceback",
    "EPERM",
    "Operation not permitted",
    "Permission denied",
    "warning:",  # plain output
    '"level": "warning"',  # --json
)


def assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    for word in NOISE:
        assert word not in output, f"{word!r} in output:\n{output}"


def project_files() -> dict[str, bytes]:
    """A small project: a 3 MiB video (copied alone), artifacts, empty and nested files."""
    rng = random.Random(4)
    files = {
        "projet_1/video1.mp4": rng.randbytes(3 * MiB + 17),
        "projet_1/video1_scenes.csv": b"scene,start,end\n1,0.0,4.2\n",
        "projet_1/video1_tracking.json": b'{"frames": []}',
        "projet_1/docs/notes été.txt": "déjà vu\n".encode(),
        "projet_1/empty": b"",
    }
    files.update({f"projet_1/thumbs/t{i:03}.jpg": rng.randbytes(i * 997) for i in range(40)})
    return files


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The final JSON object of a ``--json`` run."""
    last: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    assert last["kind"] == "summary", last
    return last


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))


def b3sum_check(dest: Path) -> subprocess.CompletedProcess[str]:
    b3sum = require_tool("b3sum")
    return subprocess.run(
        [b3sum, "-c", ".finalcopy/manifest.blake3"],
        cwd=dest,
        capture_output=True,
        text=True,
        check=False,
    )


# -- Windows names, without a mount ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a:b", "reserved character ':'"),
        ('x<>"|?*\\', "reserved character"),
        ("tab\there", "control character 0x09"),
        ("nul\x00", "control character 0x00"),
        ("notes.", "ends with a dot"),
        ("notes ", "ends with a space"),
        ("CON", "reserved device name CON"),
        ("con.txt", "reserved device name CON"),
        ("Lpt9.tar.gz", "reserved device name LPT9"),
        ("com1 .txt", "reserved device name COM1"),
        ("x" * 256, "longer than 255 UTF-16 units (256)"),
        ("\U0001f600" * 128, "longer than 255 UTF-16 units (256)"),
        ("bad\udcff", "not valid UTF-8"),
    ],
)
def test_names_windows_cannot_hold(name: str, reason: str) -> None:
    assert any(r.startswith(reason) for r in name_reasons(name)), name_reasons(name)


@pytest.mark.parametrize(
    "name",
    ["ok.txt", "été 2024.mp4", "CONSOLE", "con_1", "COM10", ".hidden", "a.b.c", "x" * 255],
)
def test_names_windows_can_hold(name: str) -> None:
    assert name_reasons(name) == []


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("a:b", "a\uff1ab"),  # FULLWIDTH COLON, as rclone's EncodeColon
        ('<>"\\|?*', "\uff1c\uff1e\uff02\uff3c\uff5c\uff1f\uff0a"),
        ("a\x01b", "a\u2401b"),  # SYMBOL FOR START OF HEADING
        ("notes.", "notes\uff0e"),
        ("notes ", "notes\u2420"),
        ("CON.txt", "\uff23ON.txt"),
        ("con", "\uff43on"),
        ("a\uff1ab", "a\u201b\uff1ab"),  # already fullwidth: quoted
        ("\uff23ON", "\u201b\uff23ON"),  # looks like a mapped device name: quoted
        ("bad\udcff", "bad\u201bFF"),
        ("ok.txt", "ok.txt"),
    ],
)
def test_mapping_examples(name: str, stored: str) -> None:
    assert encode_name(name) == stored
    assert decode_name(stored) == name


def test_mapping_is_reversible_and_always_legal() -> None:
    alphabet = [
        *'aZ.: <>"\\|?*~C1OoNnLPTMUX\x00\x01\x1f',
        *"\u201b\uff1a\u2420\uff0e\uff23\uff2f\u2401\udcff\u00b9\u00df",
    ]
    rng = random.Random(7)
    for _ in range(50_000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        if rng.random() < 0.2:
            name = rng.choice(["CON", "nul", "Com\u00b9", "\uff23on"]) + name
        stored = encode_name(name)
        assert name_reasons(stored) == [], (name, stored)
        assert decode_name(stored) == name, (name, stored)
        suffixed = add_suffix(stored, rng.randint(2, 99))
        assert name_reasons(suffixed) == [], (name, suffixed)
        assert decode_name(suffixed) == name, (name, suffixed)


def test_case_is_folded_like_ntfs() -> None:
    assert fold_case("Straße.txt") == "STRAßE.TXT"  # no ß → SS expansion
    assert fold_case("été") == fold_case("ÉTÉ")


def test_check_reports_every_bad_name_once_where_it_occurs() -> None:
    paths = ["p/a:b/x", "p/a:b/y", "p/CON", "p/ok", "p/Photo.jpg", "p/photo.JPG", "q./z"]
    check = check_names(paths, map_names=False)
    assert check.stored == {}
    assert check.problems == [
        "p/CON: reserved device name CON",
        "p/Photo.jpg: same name as 'photo.JPG' but for case (Windows can open only one of them)",
        "p/a:b: reserved character ':'",
        "p/photo.JPG: same name as 'Photo.jpg' but for case (Windows can open only one of them)",
        "q.: ends with a dot",
    ]


def test_check_maps_names_and_suffixes_case_collisions() -> None:
    paths = ["A/x", "a/x:1", "b.TXT", "B.txt", "b.txt", "ok/fine"]
    check = check_names(paths, map_names=True)
    assert check.problems == []
    # The first in code point order keeps its name; folders settle before their content.
    assert check.stored == {
        "a": "a\u201b~2",
        "a/x:1": "a\u201b~2/x\uff1a1",
        "b.TXT": "b\u201b~2.TXT",
        "b.txt": "b\u201b~3.txt",
    }
    for original, stored in check.stored.items():
        assert decode_path(stored) == original


def test_too_long_names_cannot_be_mapped() -> None:
    check = check_names(["d/" + ":" * 200 + "\uff1a" * 55], map_names=True)
    assert len(check.problems) == 1
    assert "longer than 255 UTF-16 units once mapped" in check.problems[0]


def test_names_table_round_trips() -> None:
    renamed = {"a:b": "a\uff1ab", "tab\there\\": "tab\u2409here\uff3c", "bad\udcff": "bad\u201bFF"}
    data = format_names(renamed)
    assert data.startswith(b"original\tstored\n")
    assert parse_names(data) == renamed


# -- strategy and the no-metadata guarantee, on local folders ----------------------


def test_forced_strategies(tmp_path: Path) -> None:
    assert choose_strategy(tmp_path, "posix").posix_metadata
    forced = choose_strategy(tmp_path, "none")
    assert not forced.posix_metadata and "--metadata none" in forced.reason


def test_posix_filesystem_keeps_metadata(tmp_path: Path) -> None:
    fs_type, _ = filesystem_type(tmp_path / "not" / "yet")
    assert fs_type not in ("unknown", "fuseblk")
    strategy = choose_strategy(tmp_path / "not" / "yet")
    assert strategy.posix_metadata, strategy.reason
    assert fs_type in strategy.reason
    assert list(tmp_path.iterdir()) == []  # the probe left nothing behind


@pytest.mark.anyio
async def test_no_metadata_never_calls_chmod_utime_chown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", project_files())
    (src / "projet_1/link").symlink_to("video1.mp4")
    backend = await open_backend(str(tmp_path / "dst"), DestinationOptions(metadata="none"))
    assert isinstance(backend, NoMetadataBackend)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"metadata call in no-metadata mode: {args}")

    for name in ("chmod", "fchmod", "lchmod", "utime", "chown", "fchown", "lchown"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(shutil, "copystat", forbidden)
    monkeypatch.setattr(shutil, "copymode", forbidden)
    async with backend:
        report = await copy_tree(src, backend, CopyOptions())
        again = await copy_tree(src, backend, CopyOptions())
    assert report.ok and not report.warnings, (report.failed, report.warnings)
    assert again.skipped == len(project_files())
    assert tree_content(tmp_path / "dst") == project_files()


@pytest.mark.parametrize("size", [0, 10, 100_000, MiB, 3 * MiB + 5])
def test_files_are_written_in_large_writes(
    size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The no-metadata backend writes a file in writes of 1 MiB (fewer FUSE requests)."""
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, chunk: bytes | memoryview) -> int:
        written = real_write(fd, chunk)
        writes.append(written)
        return written

    backend = NoMetadataBackend(tmp_path / "dst", reason="test")
    source = FileChunkSource(src, size, BLAKE3, 64 * 1024, threading.Event())
    transfer = FileTransfer("f.bin", source, None, None)
    anyio.run(backend.makedirs, [""])
    monkeypatch.setattr(os, "write", counting_write)
    anyio.run(backend.put_files, [transfer], BLAKE3)
    monkeypatch.undo()
    assert transfer.error is None
    assert (tmp_path / "dst" / "f.bin").read_bytes() == data
    assert writes == [min(FUSE_BLOCK, size - i) for i in range(0, size, FUSE_BLOCK)]


# -- on a real ntfs-3g mount ------------------------------------------------------------


def test_cli_copy_rerun_and_verify_on_fuseblk(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    files = project_files()
    src = make_tree(tmp_path / "src", files)
    (src / "projet_1/latest.mp4").symlink_to("video1.mp4")
    dest = ntfs_mount.mountpoint / "final"

    result = run_cli("copy", src, dest, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_quiet(result)
    assert "destination strategy: no-metadata" in result.stderr  # diagnostics go to stderr
    assert f"{ntfs_mount.mountpoint} is fuseblk" in result.stderr
    assert tree_content(dest) == files
    assert os.readlink(dest / "projet_1/latest.mp4") == "video1.mp4"
    check = b3sum_check(dest)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == len(files)

    again = run_cli("copy", src, dest, "--json")
    assert again.returncode == 0, again.stderr
    assert_quiet(again)
    assert (summary(again)["copied"], summary(again)["skipped"]) == (0, len(files))

    verified = run_cli("verify", dest)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert_quiet(verified)
    flip_byte(dest / "projet_1/video1.mp4", 2 * MiB)
    verified = run_cli("verify", dest)
    assert verified.returncode == 1
    assert "changed: projet_1/video1.mp4" in verified.stdout


def test_skipping_survives_a_remount(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    """The destination mtime recorded at commit is the one ntfs-3g reports later."""
    files = project_files()
    src = make_tree(tmp_path / "src", files)
    dest = ntfs_mount.mountpoint / "final"
    assert run_cli("copy", src, dest).returncode == 0
    records = [
        json.loads(line) for line in (dest / ".finalcopy/state.jsonl").read_text().splitlines()
    ]
    subprocess.run(["umount", ntfs_mount.mountpoint], check=True)
    subprocess.run(["ntfs-3g", ntfs_mount.device, ntfs_mount.mountpoint], check=True)
    for record in records:
        assert (dest / record["path"]).stat().st_mtime_ns == record["dest_mtime_ns"]
    again = run_cli("copy", src, dest, "--json")
    assert (summary(again)["copied"], summary(again)["skipped"]) == (0, len(files))


def test_commit_renames_over_existing_files(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    files = {"a/big.bin": os.urandom(2 * MiB), "a/small": b"new", "a/small2": b"new 2"}
    src = make_tree(tmp_path / "src", files)
    dest = ntfs_mount.mountpoint / "final"
    stale = {"a/big.bin": b"stale", "a/small": b"stale, longer than the new one", "a/small2": b""}
    make_tree(dest, stale)
    result = run_cli("copy", src, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_content(dest) == files

    (src / "a/small").write_bytes(b"changed again")
    again = run_cli("copy", src, dest, "--json")
    assert (summary(again)["copied"], summary(again)["skipped"]) == (1, 2)
    assert (dest / "a/small").read_bytes() == b"changed again"
    assert sorted(p.name for p in (dest / "a").iterdir()) == ["big.bin", "small", "small2"]


def test_probe_sees_chmod_ignored_on_a_default_mount(ntfs_mount: NtfsMount) -> None:
    """As root on a default ntfs-3g mount, chmod succeeds but every mode stays 0777."""
    target = ntfs_mount.mountpoint / "sub" / "dest"
    assert probe_metadata(ntfs_mount.mountpoint) == "chmod is silently ignored there"
    by_probe = choose_strategy(target, use_fs_type=False)
    assert not by_probe.posix_metadata
    assert "probe: chmod is silently ignored" in by_probe.reason
    by_type = choose_strategy(target)
    assert not by_type.posix_metadata and "is fuseblk" in by_type.reason
    assert list(ntfs_mount.mountpoint.iterdir()) == []


def test_eperm_mount_is_detected_and_the_copy_is_clean(
    ntfs_mount_foreign_owner: NtfsMount,
    unprivileged_user: LocalUser,
    public_tmp_path: Path,
) -> None:
    """A volume mounted for uid 4242, written by another user: chmod/utime give EPERM."""
    mount = ntfs_mount_foreign_owner.mountpoint
    with acting_as(unprivileged_user):
        assert probe_metadata(mount) == "chmod is refused there"
        strategy = choose_strategy(mount / "dest", use_fs_type=False)
    assert not strategy.posix_metadata
    assert "probe: chmod is refused" in strategy.reason

    files = project_files()
    src = make_tree(public_tmp_path / "src", files)
    result = run_cli("copy", src, mount / "dest", "-v", user=unprivileged_user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_quiet(result)
    assert "is fuseblk" in result.stderr
    assert tree_content(mount / "dest") == files
    again = run_cli("copy", src, mount / "dest", "--json", user=unprivileged_user)
    assert (summary(again)["copied"], summary(again)["skipped"]) == (0, len(files))
    assert run_cli("verify", mount / "dest", user=unprivileged_user).returncode == 0

    # The same copy forced to keep metadata fails: the EPERM above is real.
    forced = run_cli("copy", src, mount / "forced", "--metadata", "posix", user=unprivileged_user)
    assert forced.returncode == 1
    assert "Operation not permitted" in forced.stdout + forced.stderr


BAD_NAMES = {
    "projet/a:b.txt": b"colon",
    "projet/CON.mp4": b"device",
    "projet/notes.": b"dot",
    "projet/trailing ": b"space",
    "projet/ctl\x01.txt": b"control",
    "projet/what?/inside.txt": b"folder name",
    "projet/Photo.JPG": b"upper",
    "projet/photo.jpg": b"lower",
    "projet/fine.txt": b"ok",
}


def test_bad_names_are_rejected_before_anything_is_copied(
    ntfs_mount: NtfsMount, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", BAD_NAMES)
    dest = ntfs_mount.mountpoint / "final"
    result = run_cli("copy", src, dest)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "8 name(s) cannot be stored" in result.stderr
    for path in ("a:b.txt", "CON.mp4", "notes.", "trailing ", "ctl\x01.txt", "what?"):
        assert f"projet/{path}: " in result.stderr
    assert "projet/Photo.JPG: same name as 'photo.jpg' but for case" in result.stderr
    assert "projet/photo.jpg: same name as 'Photo.JPG' but for case" in result.stderr
    assert "inside.txt" not in result.stderr and "fine.txt" not in result.stderr
    assert not dest.exists()
    assert list(ntfs_mount.mountpoint.iterdir()) == []


def test_bad_names_are_mapped_on_request(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", BAD_NAMES)
    dest = ntfs_mount.mountpoint / "final"
    result = run_cli("copy", src, dest, "--ntfs-names", "map", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_quiet(result)
    assert "names Windows cannot hold are mapped reversibly" in result.stderr

    renamed = parse_names((dest / ".finalcopy/names.tsv").read_bytes())
    assert renamed["projet/a:b.txt"] == "projet/a\uff1ab.txt"
    assert renamed["projet/what?/inside.txt"] == "projet/what\uff1f/inside.txt"
    assert "projet/Photo.JPG" not in renamed  # the first of the pair keeps its name
    assert renamed["projet/photo.jpg"] == "projet/photo\u201b~2.jpg"
    assert "projet/fine.txt" not in renamed
    stored = tree_content(dest)
    assert {renamed.get(p, p): data for p, data in BAD_NAMES.items()} == stored
    assert {decode_path(p): data for p, data in stored.items()} == BAD_NAMES

    check = b3sum_check(dest)
    assert check.returncode == 0, check.stdout + check.stderr
    assert run_cli("verify", dest).returncode == 0
    again = run_cli("copy", src, dest, "--ntfs-names", "map", "--json")
    assert (summary(again)["copied"], summary(again)["skipped"]) == (0, len(BAD_NAMES))


def test_windows_names_mount_accepts_mapped_names(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    """udisks mounts NTFS with ``windows_names``: ntfs-3g itself then refuses bad names."""
    subprocess.run(["umount", ntfs_mount.mountpoint], check=True)
    subprocess.run(
        ["ntfs-3g", "-o", "windows_names", ntfs_mount.device, ntfs_mount.mountpoint], check=True
    )
    src = make_tree(tmp_path / "src", BAD_NAMES)
    result = run_cli("copy", src, ntfs_mount.mountpoint / "final", "--ntfs-names", "map")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli("verify", ntfs_mount.mountpoint / "final").returncode == 0


@pytest.mark.anyio
async def test_engine_maps_a_destination_subfolder(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    """``dest`` itself may need mapping (``finalcopy run`` names it after the project)."""
    files = {"a?.txt": b"1", "sub/b": b"2"}
    src = make_tree(tmp_path / "src", files)
    backend = await open_backend(str(ntfs_mount.mountpoint), DestinationOptions(ntfs_names="map"))
    async with backend:
        assert isinstance(backend, NoMetadataBackend)
        report = await copy_tree(src, backend, CopyOptions(), dest="projet:1")
        assert report.ok, report.failed
        stored = ntfs_mount.mountpoint / "projet\uff1a1"
        assert tree_content(stored) == {"a\uff1f.txt": b"1", "sub/b": b"2"}
        assert b3sum_check(stored).returncode == 0
        verified = await verify_tree(backend, "projet\uff1a1")
        assert verified.ok and verified.checked == 2
    reject = await open_backend(str(ntfs_mount.mountpoint))
    async with reject:
        with pytest.raises(UnsafeNameError) as caught:
            await copy_tree(src, reject, CopyOptions(), dest="other")
    assert caught.value.problems == ["other/a?.txt: reserved character '?'"]


def test_no_metadata_syscalls_reach_the_kernel(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    """Below Python too: strace sees no chmod/utime/chown family call during a copy."""
    strace = shutil.which("strace")
    require_part(None if strace else "strace is not installed (scripts/setup.sh installs it)")
    assert strace is not None
    src = make_tree(tmp_path / "src", project_files())
    log = tmp_path / "strace.log"
    calls = "chmod,fchmod,fchmodat,utime,utimes,utimensat,futimesat,chown,fchown,lchown,fchownat"
    command = [strace, "-f", "-qq", "-o", str(log), "-e", f"trace={calls}", "-e", "signal=none"]
    command += ["--", sys.executable]  # signals: the command's helper processes end (SIGCHLD)
    if subprocess.run([*command, "-c", "pass"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace processes here (ptrace refused)")
    result = subprocess.run(
        [*command, "-m", "finalcopy", "copy", str(src), str(ntfs_mount.mountpoint / "final")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text() == ""
