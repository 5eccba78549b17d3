"""Local and NTFS destinations: planted symlinks never make finalcopy write outside DEST.

finalcopy often runs as root against storage that others can write. Whoever
can write into the destination can plant symbolic links at the names
finalcopy uses (temporary names are deterministic) or where it expects
folders; the tests below plant them and check that nothing outside the
destination root is written, truncated, renamed or deleted (issue 9, items
1 and 2). Each failed on the path-based backend this module replaced.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest

from finalcopy.backends import DestinationOptions, FileTransfer, open_backend
from finalcopy.backends.base import temp_name
from finalcopy.backends.local import LocalBackend
from finalcopy.backends.local.strategy import probe_metadata
from finalcopy.engine import CopyReport, copy_tree, verify_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import DestinationError
from finalcopy.hashing import get_algorithm
from tests.support.cli import run_cli
from tests.support.ntfs import NtfsMount
from tests.support.trees import exact_snapshot as snapshot
from tests.support.trees import make_tree, tree_content
from tests.support.users import LocalUser, acting_as

pytestmark = pytest.mark.anyio

BLAKE3 = get_algorithm("blake3")
PRECIOUS = b"precious bytes that finalcopy must never touch\n"


def plant_link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def absent(path: Path) -> bool:
    """Nothing at ``path``, not even a dangling link."""
    return not os.path.lexists(path)


def victim(tmp_path: Path, name: str = "victim") -> Path:
    """A file outside every destination, with content to compare afterwards."""
    path = tmp_path / "outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PRECIOUS)
    return path


async def failure_of(copy: Awaitable[CopyReport]) -> str:
    """What a copy that must not succeed said: its error, or its per-file failures."""
    try:
        report = await copy
    except DestinationError as exc:
        return str(exc)
    assert not report.ok, "the copy succeeded through a planted symlink"
    return "\n".join(report.failed.values())


def source_for(path: Path) -> FileChunkSource:
    return FileChunkSource(path, path.stat().st_size, BLAKE3, 64 * 1024, threading.Event())


# -- temporary names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        f"{temp_name('a.txt')}",
        f"docs/{temp_name('x.bin')}",
        f".finalcopy/{temp_name('manifest.blake3')}",
        f".finalcopy/{temp_name('state.jsonl')}",
    ],
)
async def test_symlink_at_a_temporary_name_is_replaced_not_followed(
    tmp_path: Path, planted: str
) -> None:
    target = victim(tmp_path)
    src = make_tree(tmp_path / "src", {"a.txt": b"new a", "docs/x.bin": b"new x"})
    dest = tmp_path / "dest"
    plant_link(dest / planted, target)
    report = await copy_tree(src, LocalBackend(dest))
    assert report.ok, report.failed
    assert target.read_bytes() == PRECIOUS
    assert tree_content(dest) == {"a.txt": b"new a", "docs/x.bin": b"new x"}
    assert absent(dest / planted)
    assert (await verify_tree(LocalBackend(dest))).ok


async def test_the_write_probe_never_touches_what_bears_its_former_fixed_name(
    tmp_path: Path,
) -> None:
    """The probe's name is unpredictable: an entry at any fixed name is neither used nor lost."""
    target = victim(tmp_path)
    src = make_tree(tmp_path / "src", {"a.txt": b"new a"})
    dest = tmp_path / "dest"
    planted = dest / temp_name("finalcopy-write-probe")
    plant_link(planted, target)
    report = await copy_tree(src, LocalBackend(dest))
    assert report.ok, report.failed
    assert target.read_bytes() == PRECIOUS
    assert planted.is_symlink(), "not ours: left as it was"


async def test_leftover_temporary_file_is_replaced_never_opened(tmp_path: Path) -> None:
    """A leftover is unlinked, not truncated: a hard link there must not carry the write out."""
    target = victim(tmp_path)
    src = make_tree(tmp_path / "src", {"a.txt": b"new", "b.txt": b"fresh"})
    dest = tmp_path / "dest"
    dest.mkdir()
    os.link(target, dest / temp_name("a.txt"))  # same inode as a file outside DEST
    (dest / temp_name("b.txt")).write_bytes(b"an interrupted copy's much longer leftover" * 100)
    report = await copy_tree(src, LocalBackend(dest))
    assert report.ok, report.failed
    assert target.read_bytes() == PRECIOUS and target.stat().st_nlink == 1
    assert (dest / "a.txt").read_bytes() == b"new"
    assert (dest / "b.txt").read_bytes() == b"fresh"


async def test_folder_at_a_temporary_name_is_a_clear_error(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"new", "b.txt": b"other"})
    dest = tmp_path / "dest"
    (dest / temp_name("a.txt")).mkdir(parents=True)
    report = await copy_tree(src, LocalBackend(dest))
    assert list(report.failed) == ["a.txt"]
    assert "folder" in report.failed["a.txt"] and temp_name("a.txt") in report.failed["a.txt"]
    assert (dest / "b.txt").read_bytes() == b"other"


async def test_the_engine_chosen_temporary_name_is_used(tmp_path: Path) -> None:
    """``FileTransfer.temp`` is where bytes go; the default temporary name is left alone."""
    src = make_tree(tmp_path / "src", {"a": b"content"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / temp_name("a")).write_bytes(b"a planned file named like a temporary one")
    backend = LocalBackend(dest)
    transfer = FileTransfer("a", source_for(src / "a"), 0o644, 0, temp=temp_name("a", 1))
    await backend.put_files([transfer], BLAKE3)
    assert transfer.error is None
    assert (dest / "a").read_bytes() == b"content"
    assert (dest / temp_name("a")).read_bytes() == b"a planned file named like a temporary one"
    assert not (dest / temp_name("a", 1)).exists()


def test_metadata_probe_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    """The probe chmods and utimes a scratch file: through a link it would change the target."""
    target = victim(tmp_path)
    before = snapshot(target.parent)
    folder = tmp_path / "dest"
    plant_link(folder / temp_name(f"metadata-probe-{os.getpid()}"), target)
    assert probe_metadata(folder) is None  # tmpfs or ext4 keep metadata
    assert snapshot(target.parent) == before
    assert list(folder.iterdir()) == []


# -- folders ------------------------------------------------------------------------


async def test_folder_symlink_inside_dest_is_refused(tmp_path: Path) -> None:
    outside = victim(tmp_path).parent
    before = snapshot(outside)
    src = make_tree(tmp_path / "src", {"docs/x": b"x", "docs/sub/y": b"y", "top": b"t"})
    dest = tmp_path / "dest"
    plant_link(dest / "docs", outside)
    message = await failure_of(copy_tree(src, LocalBackend(dest)))
    assert f"{dest}/docs" in message and "symbolic link" in message
    assert snapshot(outside) == before
    assert (dest / "docs").is_symlink()


async def test_cli_names_the_planted_folder_link(tmp_path: Path) -> None:
    outside = victim(tmp_path).parent
    before = snapshot(outside)
    src = make_tree(tmp_path / "src", {"docs/x": b"x"})
    dest = tmp_path / "dest"
    plant_link(dest / "docs", outside)
    result = run_cli("copy", src, dest)
    assert result.returncode != 0
    assert f"{dest}/docs" in result.stderr and "symbolic link" in result.stderr
    assert snapshot(outside) == before


async def test_meta_folder_symlink_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    src = make_tree(tmp_path / "src", {"a.txt": b"a"})
    dest = tmp_path / "dest"
    plant_link(dest / ".finalcopy", outside)
    message = await failure_of(copy_tree(src, LocalBackend(dest)))
    assert f"{dest}/.finalcopy" in message and "symbolic link" in message
    assert list(outside.iterdir()) == []
    backend = LocalBackend(dest)
    with pytest.raises(DestinationError, match="symbolic link"):
        await backend.write_bytes(".finalcopy/state.jsonl", b"forged")
    with pytest.raises(DestinationError, match="symbolic link"):
        await backend.read_bytes(".finalcopy/state.jsonl")
    assert list(outside.iterdir()) == []


def release_fifo_readers(fifo: Path) -> None:
    """Open ``fifo`` for writing and close it: a reader stuck in open() gets end-of-file."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_fifo_planted_at_a_read_name_does_not_hang(tmp_path: Path) -> None:
    """Reading state or a manifest back must not block on a FIFO planted at its name."""
    dest = tmp_path / "dest"
    fifo = dest / ".finalcopy" / "state.jsonl"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    backend = LocalBackend(dest)
    # A blocked open() cannot be cancelled: release it after a while, so that a
    # regression fails this test instead of hanging the run.
    rescue = threading.Timer(5, release_fifo_readers, [fifo])
    rescue.start()
    try:
        with pytest.raises(DestinationError, match="not a regular file"):
            await backend.read_bytes(".finalcopy/state.jsonl")
        with pytest.raises(DestinationError, match="not a regular file"):
            await backend.hash_file(".finalcopy/state.jsonl", BLAKE3)
    finally:
        rescue.cancel()


async def test_no_operation_goes_through_a_folder_link(tmp_path: Path) -> None:
    outside = victim(tmp_path, "x").parent
    (outside / "sub").mkdir()
    before = snapshot(outside)
    dest = tmp_path / "dest"
    plant_link(dest / "docs", outside)
    backend = LocalBackend(dest)
    src = make_tree(tmp_path / "src", {"f": b"f"})
    # Every operation, as (method, arguments): each must refuse the link by name.
    attempts: list[tuple[Callable[..., Awaitable[object]], tuple[object, ...]]] = [
        (backend.makedirs, (["docs/new"],)),
        (backend.write_bytes, ("docs/x", b"overwritten")),
        (backend.read_bytes, ("docs/x",)),
        (backend.hash_file, ("docs/x", BLAKE3)),
        (backend.remove, ("docs/x",)),
        (backend.remove, ("docs/sub",)),
        (backend.rename, ("docs/x", "stolen")),
        (backend.rename, ("docs/sub", "stolen")),
        (backend.symlink, ("docs/l", "/etc/passwd")),
        (backend.open_temp, ("docs/x",)),
        (partial(backend.set_metadata, mode=0o700, mtime_ns=0), ("docs",)),
        (partial(backend.set_metadata, mode=0o700, mtime_ns=0), ("docs/sub",)),
        (backend.walk, ("docs",)),
        (backend.stat, (["docs/x"],)),
        (backend.sync_dirs, (["docs/sub"],)),
    ]
    for operation, arguments in attempts:
        with pytest.raises(DestinationError, match=f"'{dest}/docs' is a symbolic link"):
            await operation(*arguments)
    transfer = FileTransfer("docs/x", source_for(src / "f"), 0o644, 0)
    await backend.put_files([transfer], BLAKE3)
    assert transfer.error is not None and "symbolic link" in str(transfer.error)
    assert snapshot(outside) == before
    assert not (dest / "stolen").exists()
    walked = {path: st.kind for path, st in await backend.walk("")}
    assert walked == {"docs": "symlink"}


async def test_remove_and_rename_act_on_the_link_itself(tmp_path: Path) -> None:
    target = victim(tmp_path)
    outside = target.parent
    before = snapshot(outside)
    dest = tmp_path / "dest"
    plant_link(dest / "to-file", target)
    plant_link(dest / "to-dir", outside)
    plant_link(dest / "other", target)
    backend = LocalBackend(dest)
    with pytest.raises(DestinationError, match="exists"):
        await backend.rename("to-file", "other")
    await backend.rename("to-dir", "moved")
    assert (dest / "moved").is_symlink() and os.readlink(dest / "moved") == str(outside)
    await backend.remove("moved")
    await backend.remove("to-file")
    assert sorted(p.name for p in dest.iterdir()) == ["other"]
    assert snapshot(outside) == before
    with pytest.raises(DestinationError, match="symbolic link"):
        await backend.set_metadata("other", mode=0o600, mtime_ns=0)
    assert snapshot(outside) == before


async def test_makedirs_does_not_accept_a_link_as_a_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    plant_link(dest / "a", outside)
    with pytest.raises(DestinationError, match=f"'{dest}/a' is a symbolic link"):
        await LocalBackend(dest).makedirs(["a"])
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "path", ["../escaped", "a/../../escaped", "{tmp}/escaped", "/{tmp}/escaped", "a/./b", "a//b"]
)
async def test_paths_that_would_leave_the_root_are_refused(tmp_path: Path, path: str) -> None:
    dest = tmp_path / "dest"
    backend = LocalBackend(dest)
    await backend.makedirs(["a"])
    with pytest.raises(DestinationError):
        await backend.write_bytes(path.format(tmp=tmp_path), b"x")
    assert not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in dest.rglob("*")) == ["a"]


async def test_the_root_itself_may_be_a_link(tmp_path: Path) -> None:
    """The operator's choice (``/mnt/nas -> /srv/nas``) is followed; names below it are not."""
    real = tmp_path / "real"
    real.mkdir()
    dest = tmp_path / "dest-link"
    dest.symlink_to(real)
    src = make_tree(tmp_path / "src", {"a/b.txt": b"b"})
    report = await copy_tree(src, LocalBackend(dest))
    assert report.ok, report.failed
    assert tree_content(real) == {"a/b.txt": b"b"}
    (st,) = await LocalBackend(dest).stat([""])
    assert st is not None and st.kind == "dir"


async def test_links_planted_by_an_unprivileged_user(
    public_tmp_path: Path, unprivileged_user: LocalUser
) -> None:
    """The real threat: a user who may write DEST plants links, root runs the copies."""
    secret_dir = public_tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    target = secret_dir / "shadow"
    target.write_bytes(PRECIOUS)
    before = snapshot(secret_dir)
    dest = public_tmp_path / "dest"
    dest.mkdir()
    os.chown(dest, unprivileged_user.uid, unprivileged_user.gid)
    with acting_as(unprivileged_user):
        (dest / temp_name("a.txt")).symlink_to(target)
    src = make_tree(public_tmp_path / "src", {"a.txt": b"a"})
    report = await copy_tree(src, LocalBackend(dest))
    assert report.ok, report.failed
    with acting_as(unprivileged_user):
        (dest / "docs").symlink_to(secret_dir)
    make_tree(src, {"docs/x": b"x"})
    assert "docs' is a symbolic link" in await failure_of(copy_tree(src, LocalBackend(dest)))
    with acting_as(unprivileged_user):
        (dest / "docs").unlink()
        (dest / ".finalcopy").rename(dest / "moved-away")
        (dest / ".finalcopy").symlink_to(secret_dir)
    message = await failure_of(copy_tree(src, LocalBackend(dest)))
    assert ".finalcopy' is a symbolic link" in message
    assert snapshot(secret_dir) == before


# -- a real ntfs-3g mount -------------------------------------------------------------


async def test_ntfs_planted_links_are_not_followed(ntfs_mount: NtfsMount, tmp_path: Path) -> None:
    target = victim(tmp_path)
    outside = target.parent
    before = snapshot(outside)
    root = Path(ntfs_mount.mountpoint) / "dest"
    plant_link(root / temp_name("a.txt"), target)
    src = make_tree(tmp_path / "src", {"a.txt": b"a on ntfs"})
    backend = await open_backend(str(root), DestinationOptions())
    assert not backend.capabilities.posix_metadata, backend.strategy
    async with backend:
        report = await copy_tree(src, backend)
        assert report.ok, report.failed
        assert (root / "a.txt").read_bytes() == b"a on ntfs"
        assert absent(root / temp_name("a.txt"))
        plant_link(root / "docs", outside)
        src2 = make_tree(tmp_path / "src2", {"docs/x": b"x"})
        message = await failure_of(copy_tree(src2, backend))
        assert f"{root}/docs" in message and "symbolic link" in message
    assert snapshot(outside) == before
