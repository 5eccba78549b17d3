"""One contract, every backend: local POSIX, NTFS on a real ntfs-3g mount, SFTP on a real sshd.

Each test runs once per backend kind; a new backend joins by adding a kind to
``open_kind``. Under ``CI=true`` a kind whose real part is missing fails.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from finalcopy.backends import Backend, DestinationOptions, FileTransfer, open_backend
from finalcopy.backends.base import is_temp_name
from finalcopy.engine import CopyOptions, copy_tree, verify_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import DestinationError, FinalcopyError
from finalcopy.hashing import get_algorithm
from tests.conftest import make_tree, tree_content

pytestmark = pytest.mark.anyio

KINDS = ["local", "ntfs", "sftp"]
BLAKE3 = get_algorithm("blake3")


async def open_kind(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Backend, Path]:
    """The backend of ``kind`` rooted at an empty folder, and that folder as a local path."""
    if kind == "local":
        root = tmp_path / "dest"
        return await open_backend(str(root), DestinationOptions(metadata="posix")), root
    if kind == "ntfs":
        mount = request.getfixturevalue("ntfs_mount")
        root = Path(mount.mountpoint) / "dest"
        backend = await open_backend(str(root))
        assert not backend.capabilities.posix_metadata, backend.strategy
        return backend, root
    server = request.getfixturevalue("sshd_server")
    root = tmp_path / "remote"
    url = f"sftp://{server.user}@{server.host}:{server.port}{root}"
    options = DestinationOptions(identity_file=server.client_key, known_hosts=server.known_hosts)
    return await open_backend(url, options), root


@pytest.fixture(params=KINDS)
async def backend_and_root(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Backend, Path]]:
    backend, root = await open_kind(request.param, request, tmp_path)
    async with backend:
        await backend.prepare()
        yield backend, root


def source_for(path: Path) -> FileChunkSource:
    return FileChunkSource(path, path.stat().st_size, BLAKE3, 64 * 1024, threading.Event())


async def test_prepare_creates_root_and_leaves_no_probe(
    backend_and_root: tuple[Backend, Path],
) -> None:
    _, root = backend_and_root
    assert root.is_dir()
    assert list(root.iterdir()) == []


async def test_temp_write_is_invisible_until_commit(backend_and_root: tuple[Backend, Path]) -> None:
    backend, root = backend_and_root
    await backend.makedirs(["a/b"])
    writer = await backend.open_temp("a/b/file.bin")
    await writer.write(b"x" * 100_000)
    assert (await backend.stat(["a/b/file.bin"])) == [None]
    assert [p.name for p in (root / "a/b").iterdir() if not is_temp_name(p.name)] == []
    mtime = await writer.commit(mode=0o640, mtime_ns=1_600_000_000_000_000_000)
    (st,) = await backend.stat(["a/b/file.bin"])
    assert st is not None and st.kind == "file" and st.size == 100_000
    assert mtime > 0
    assert (root / "a/b/file.bin").read_bytes() == b"x" * 100_000
    assert [p.name for p in (root / "a/b").iterdir()] == ["file.bin"]


async def test_commit_replaces_an_existing_file(backend_and_root: tuple[Backend, Path]) -> None:
    backend, root = backend_and_root
    await backend.write_bytes("f", b"old")
    writer = await backend.open_temp("f")
    await writer.write(b"new content")
    await writer.commit(mode=None, mtime_ns=None)
    assert (root / "f").read_bytes() == b"new content"
    assert sorted(p.name for p in root.iterdir()) == ["f"]


async def test_abort_removes_the_temporary_file(backend_and_root: tuple[Backend, Path]) -> None:
    backend, root = backend_and_root
    writer = await backend.open_temp("g")
    await writer.write(b"partial")
    await writer.abort()
    await writer.abort()  # idempotent
    assert list(root.iterdir()) == []


async def test_stat_walk_remove(backend_and_root: tuple[Backend, Path]) -> None:
    backend, _ = backend_and_root
    await backend.makedirs(["d/e", "d/e"])
    await backend.write_bytes("d/e/f", b"12345")
    st_dir, st_file, st_none = await backend.stat(["d", "d/e/f", "nope"])
    assert st_dir is not None and st_dir.kind == "dir"
    assert st_file is not None and (st_file.kind, st_file.size) == ("file", 5)
    assert st_none is None
    walked = {path: st.kind for path, st in await backend.walk("")}
    assert walked == {"d": "dir", "d/e": "dir", "d/e/f": "file"}
    await backend.remove("d/e/f")
    await backend.remove("d/e/f")  # missing is fine
    await backend.remove("d/e")
    assert await backend.stat(["d/e"]) == [None]


async def test_small_files_round_trip(backend_and_root: tuple[Backend, Path]) -> None:
    backend, _ = backend_and_root
    assert await backend.read_bytes("m/x") is None
    await backend.write_bytes("m/x", b"first")
    await backend.write_bytes("m/x", b"second")
    assert await backend.read_bytes("m/x") == b"second"


async def test_hash_file_matches_local_hash(
    backend_and_root: tuple[Backend, Path], tmp_path: Path
) -> None:
    backend, _ = backend_and_root
    data = os.urandom(300_000)
    await backend.write_bytes("h", data)
    for name in ("blake3", "sha256", "xxh128"):
        algorithm = get_algorithm(name)
        expected = algorithm.new()
        expected.update(data)
        assert await backend.hash_file("h", algorithm) == expected.hexdigest()


async def test_put_files_fills_outcomes(
    backend_and_root: tuple[Backend, Path], tmp_path: Path
) -> None:
    backend, root = backend_and_root
    src = make_tree(tmp_path / "src", {"one": os.urandom(200_000), "two": b"", "three": b"3"})
    await backend.makedirs(["p"])
    transfers = [
        FileTransfer(path=f"p/{name}", source=source_for(src / name), mode=0o644,
                     mtime_ns=1_600_000_000_000_000_000, readback=True)
        for name in ("one", "two", "three")
    ]  # fmt: skip
    await backend.put_files(transfers, BLAKE3)
    for transfer in transfers:
        assert transfer.error is None
        assert transfer.readback_digest == transfer.source.digest()  # type: ignore[attr-defined]
        name = transfer.path.split("/")[1]
        assert (root / "p" / name).read_bytes() == (src / name).read_bytes()


async def test_errors_are_mapped(backend_and_root: tuple[Backend, Path]) -> None:
    backend, _ = backend_and_root
    await backend.write_bytes("plain-file", b"x")
    with pytest.raises(DestinationError):
        await backend.makedirs(["plain-file/sub"])
    with pytest.raises(DestinationError):
        await backend.open_temp("plain-file/sub/x")
    with pytest.raises(DestinationError):
        await backend.hash_file("missing", BLAKE3)


async def test_failed_transfer_is_reported_not_raised(
    backend_and_root: tuple[Backend, Path], tmp_path: Path
) -> None:
    backend, root = backend_and_root
    src = make_tree(tmp_path / "src", {"ok": b"fine"})
    await backend.write_bytes("blocker", b"a file where a folder is needed")
    bad = FileTransfer("blocker/x", source_for(src / "ok"), 0o644, 0)
    good = FileTransfer("ok", source_for(src / "ok"), 0o644, 0)
    await backend.put_files([bad, good], BLAKE3)
    assert isinstance(bad.error, FinalcopyError)
    assert good.error is None and (root / "ok").read_bytes() == b"fine"


async def test_free_space_is_a_number_or_unknown(backend_and_root: tuple[Backend, Path]) -> None:
    backend, _ = backend_and_root
    free = await backend.free_space("")
    assert free is None or free > 0


async def test_engine_copy_and_verify_through_backend(
    backend_and_root: tuple[Backend, Path], tmp_path: Path
) -> None:
    backend, root = backend_and_root
    files = {f"dir{i % 3}/file{i}.bin": os.urandom(i * 7919) for i in range(30)}
    files["big/video.mp4"] = os.urandom(3 * 1024 * 1024)
    src = make_tree(tmp_path / "src", files)
    report = await copy_tree(src, backend, CopyOptions(), dest="proj")
    assert report.ok, report.failed
    assert tree_content(root / "proj") == files
    manifest = (root / "proj/.finalcopy/manifest.blake3").read_text()
    assert f"{hashlib.sha256(b'').hexdigest()}" not in manifest  # blake3, not sha256
    assert len(manifest.splitlines()) == len(files)
    again = await copy_tree(src, backend, CopyOptions(), dest="proj")
    assert (again.copied, again.skipped) == (0, len(files))
    verified = await verify_tree(backend, "proj")
    assert verified.ok and verified.checked == len(files)


async def test_rename_moves_and_never_overwrites(backend_and_root: tuple[Backend, Path]) -> None:
    backend, root = backend_and_root
    await backend.makedirs(["new/sub", "old"])
    await backend.write_bytes("new/sub/f", b"new")
    await backend.write_bytes("old/f", b"old")
    with pytest.raises(DestinationError):
        await backend.rename("new", "old")
    assert (root / "old/f").read_bytes() == b"old"
    await backend.rename("new", "moved")
    assert (root / "moved/sub/f").read_bytes() == b"new"
    assert not (root / "new").exists()
