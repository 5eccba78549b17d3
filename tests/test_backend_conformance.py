"""One contract, every backend: local POSIX, NTFS on a real ntfs-3g mount, SFTP on a real sshd.

Each test runs once per backend kind and proves one rule of
:mod:`finalcopy.backends.base`: atomic commit, no partial final name after a
failure or an interrupt, mapped errors, no link followed below the root,
metadata where declared (and never touched elsewhere), odd names, the mtime
commit returns, a failed file isolated in its batch. A new backend joins by
adding a kind to :func:`open_kind`. Under ``CI=true`` a kind whose real part
is missing fails.

The SFTP leg is hermetic: its own empty SSH configuration (never
``~/.ssh/config``), no agent, the fixture's key and known_hosts, and a short
timeout, so a hung server fails a test instead of stalling the suite.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from finalcopy.backends import Backend, DestinationOptions, FileTransfer, open_backend
from finalcopy.backends.base import is_temp_name, temp_name
from finalcopy.backends.source import SourceOutcome
from finalcopy.engine import CopyOptions, copy_tree, verify_tree
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import (
    DestinationError,
    FinalcopyError,
    Interrupted,
    SourceError,
)
from finalcopy.hashing import Algorithm, get_algorithm
from tests.support.trees import exact_snapshot as snapshot
from tests.support.trees import make_tree, tree_content

pytestmark = pytest.mark.anyio

KINDS = ["local", "ntfs", "sftp"]
BLAKE3 = get_algorithm("blake3")
MiB = 1024 * 1024
#: Whole, even seconds after 1980: every destination can hold it exactly.
MTIME = 1_600_000_000 * 1_000_000_000
SFTP_TIMEOUT = 10.0
VICTIM = b"precious bytes outside the destination\n"
ODD_NAMES = [
    "with space.txt",
    "\u00e9t\u00e9/\u00fcn\u00efc\u00f8d\u00e9 \u2713.txt",
    "-leading-dash",
    "--",
    "line\nfeed.txt",
    "tab\tand  two spaces",
    "back\\slash",
]


@dataclass
class Dest:
    """A backend under test, its root as a local path, and its kind."""

    backend: Backend
    root: Path
    kind: str


async def open_kind(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Dest:
    """The backend of ``kind`` rooted at an empty folder, and that folder as a local path."""
    if kind == "local":
        root = tmp_path / "dest"
        return Dest(await open_backend(str(root), DestinationOptions(metadata="posix")), root, kind)
    if kind == "ntfs":
        mount = request.getfixturevalue("ntfs_mount")
        root = Path(mount.mountpoint) / "dest"
        backend = await open_backend(str(root))
        assert not backend.capabilities.posix_metadata, backend.strategy
        return Dest(backend, root, kind)
    server = request.getfixturevalue("sshd_server")
    empty_config = tmp_path / "empty_ssh_config"
    empty_config.touch()
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    options = DestinationOptions(
        identity_file=server.client_key,
        known_hosts=server.known_hosts,
        ssh_config=empty_config,
        timeout=SFTP_TIMEOUT,
    )
    root = tmp_path / "remote"
    url = f"sftp://{server.user}@{server.host}:{server.port}{root}"
    return Dest(await open_backend(url, options), root, kind)


@pytest.fixture(params=KINDS)
async def dest(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Dest]:
    opened = await open_kind(request.param, request, tmp_path, monkeypatch)
    async with opened.backend:
        await opened.backend.prepare()
        yield opened


def source_for(path: Path) -> FileChunkSource:
    return FileChunkSource(path, path.stat().st_size, BLAKE3, 64 * 1024, threading.Event())


class ScriptedSource:
    """A chunk source of ``data`` that then raises ``error`` instead of ending."""

    portable = False  # its script lives in this process

    def __init__(self, data: bytes, error: FinalcopyError | Interrupted | None = None) -> None:
        self.size = len(data)
        self.done = 0
        self._chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        self._error = error

    def outcome(self) -> SourceOutcome:
        raise TypeError("a scripted source is read where it is")

    def adopt(self, outcome: SourceOutcome) -> None:
        raise TypeError("a scripted source is read where it is")

    def read_chunk(self) -> memoryview:
        if self._chunks:
            return memoryview(self._chunks.pop(0))
        if self._error is not None:
            raise self._error
        return memoryview(b"")

    def read_block(self, max_bytes: int) -> memoryview:
        return self.read_chunk()  # one chunk is a block (up to max_bytes) too

    def read_many(self, max_chunks: int, chunk_size: int = 0) -> list[bytes]:
        out: list[bytes] = []  # chunks of its own size, whatever is asked: a backend copes
        while len(out) < max_chunks and (chunk := self.read_chunk()):
            out.append(chunk.tobytes())
        return out

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        raise AssertionError("nothing to resume in these tests")

    def rewind(self) -> None:
        raise AssertionError("nothing to resume in these tests")


class PausingSource(ScriptedSource):
    """A chunk source that stops halfway until :attr:`looked` is set (10 s at most)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._halfway = len(self._chunks) // 2
        self.paused = threading.Event()
        self.looked = threading.Event()

    def read_chunk(self) -> memoryview:
        if len(self._chunks) == self._halfway and not self.paused.is_set():
            self.paused.set()
            self.looked.wait(10)
        return super().read_chunk()


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere below ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_temp_name(p.name))


async def refused(operation: Callable[[], Awaitable[object]]) -> str:
    """What a backend said refusing ``operation``: a finalcopy error, never a raw one."""
    with pytest.raises(DestinationError) as info:
        await operation()
    return str(info.value)


# -- the root ---------------------------------------------------------------------------


async def test_prepare_creates_root_and_leaves_no_probe(dest: Dest) -> None:
    assert dest.root.is_dir()
    assert list(dest.root.iterdir()) == []


async def test_free_space_is_a_number_or_unknown(dest: Dest) -> None:
    free = await dest.backend.free_space("")
    assert free is None or free > 0


# -- atomic commit ----------------------------------------------------------------------


async def test_the_final_name_holds_the_old_file_until_commit(dest: Dest) -> None:
    backend, root = dest.backend, dest.root
    await backend.makedirs(["a/b"])
    await backend.write_bytes("a/b/f", b"old")
    writer = await backend.open_temp("a/b/f")
    await writer.write(b"x" * 100_000)
    assert (root / "a/b/f").read_bytes() == b"old"
    (st,) = await backend.stat(["a/b/f"])
    assert st is not None and st.size == 3
    await writer.write(b"y" * 100_000)
    assert (root / "a/b/f").read_bytes() == b"old"
    await writer.commit(mode=0o640, mtime_ns=MTIME)
    assert (root / "a/b/f").read_bytes() == b"x" * 100_000 + b"y" * 100_000
    assert sorted(p.name for p in (root / "a/b").iterdir()) == ["f"]


async def test_a_reader_sees_the_old_file_or_the_new_one_never_a_prefix(dest: Dest) -> None:
    """The engine's road (put_files), watched by a reader of the final name throughout.

    The source pauses halfway until the reader has looked a few times, so
    the reader surely sees the file mid-copy. On ntfs-3g a rename over a file
    is link-then-unlink, so the name may be missing for an instant (see
    README, NTFS): missing, never partial.
    """
    backend, root = dest.backend, dest.root
    old, new = os.urandom(300_000), os.urandom(4 * MiB + 17)
    await backend.write_bytes("f", old)
    source = PausingSource(new)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                data = (root / "f").read_bytes()
            except FileNotFoundError:
                seen.append("missing")
                continue
            seen.append("old" if data == old else "new" if data == new else f"{len(data)} bytes")
            if source.paused.is_set() and len(seen) >= 3:
                source.looked.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    transfer = FileTransfer("f", source, 0o644, MTIME)
    try:
        await backend.put_files([transfer], BLAKE3)
    finally:
        stop.set()
        watcher.join()
    assert transfer.error is None
    assert source.looked.is_set(), "the reader never looked mid-copy"
    assert (root / "f").read_bytes() == new
    allowed = {"old", "new"} | ({"missing"} if dest.kind == "ntfs" else set())
    assert set(seen) <= allowed and "old" in seen, sorted(set(seen))
    assert leftovers(root) == []


async def test_abort_removes_the_temporary_file(dest: Dest) -> None:
    backend, root = dest.backend, dest.root
    writer = await backend.open_temp("g")
    await writer.write(b"partial")
    assert await backend.stat(["g"]) == [None]  # a new name is invisible until commit
    await writer.abort()
    await writer.abort()  # idempotent
    assert list(root.iterdir()) == []


# -- no partial final names -------------------------------------------------------------


async def test_a_failed_file_leaves_no_partial_final_name(dest: Dest) -> None:
    backend, root = dest.backend, dest.root
    await backend.write_bytes("kept", b"the previous version")
    transfers = [
        FileTransfer("new", ScriptedSource(b"n" * 70_000, SourceError("source vanished")), 0, 0),
        FileTransfer(
            "kept", ScriptedSource(b"k" * (2 * MiB), SourceError("source vanished")), 0, 0
        ),
    ]
    await backend.put_files(transfers, BLAKE3)
    assert [str(t.error) for t in transfers] == ["source vanished"] * 2
    assert not (root / "new").exists()
    assert (root / "kept").read_bytes() == b"the previous version"
    assert leftovers(root) == []


async def test_an_interrupted_batch_leaves_no_temporary_file(dest: Dest) -> None:
    backend, root = dest.backend, dest.root
    await backend.write_bytes("two", b"the previous version")
    transfers = [
        FileTransfer("one", ScriptedSource(b"1"), 0o644, 0),
        FileTransfer("two", ScriptedSource(b"2" * (2 * MiB), Interrupted("interrupted")), 0, 0),
    ]
    with pytest.raises(Interrupted):
        await backend.put_files(transfers, BLAKE3)
    assert leftovers(root) == []
    assert (root / "two").read_bytes() == b"the previous version"


async def test_a_failed_file_does_not_stop_its_batch(dest: Dest, tmp_path: Path) -> None:
    backend, root = dest.backend, dest.root
    await backend.write_bytes("blocker", b"a file where a folder is needed")
    src = make_tree(tmp_path / "src", {"big": os.urandom(2 * MiB), "ok": b"fine"})
    transfers = [
        FileTransfer("one", ScriptedSource(b"1" * 70_000), 0o644, MTIME),
        FileTransfer("two", ScriptedSource(b"2" * 10, SourceError("source vanished")), 0o644, 0),
        FileTransfer("blocker/x", source_for(src / "ok"), 0o644, 0),
        FileTransfer("big", source_for(src / "big"), 0o644, MTIME, readback=True),
        FileTransfer("three", ScriptedSource(b"3"), 0o644, MTIME),
    ]
    await backend.put_files(transfers, BLAKE3)
    failed = {t.path: t.error for t in transfers if t.error is not None}
    assert sorted(failed) == ["blocker/x", "two"]
    assert all(isinstance(error, FinalcopyError) for error in failed.values())
    assert tree_content(root) == {
        "blocker": b"a file where a folder is needed",
        "one": b"1" * 70_000,
        "big": (src / "big").read_bytes(),
        "three": b"3",
    }
    committed = [t for t in transfers if t.error is None]
    stats = await backend.stat([t.path for t in committed])
    assert [t.dest_mtime_ns for t in committed] == [st.mtime_ns for st in stats if st]
    assert leftovers(root) == []


# -- mapped errors ------------------------------------------------------------------------


async def test_errors_are_mapped(dest: Dest) -> None:
    backend = dest.backend
    await backend.write_bytes("plain-file", b"x")
    await backend.write_bytes("full/f", b"x")
    await refused(lambda: backend.makedirs(["plain-file/sub"]))
    await refused(lambda: backend.open_temp("plain-file/sub/x"))
    await refused(lambda: backend.write_bytes("plain-file/sub/x", b"x"))
    await refused(lambda: backend.hash_file("missing", BLAKE3))
    await refused(lambda: backend.remove("full"))  # not empty
    await refused(lambda: backend.rename("plain-file", "full"))  # exists


# -- links ---------------------------------------------------------------------------------


async def test_links_below_the_root_are_never_followed(dest: Dest, tmp_path: Path) -> None:
    backend, root = dest.backend, dest.root
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_bytes(VICTIM)
    (root / "docs").symlink_to(outside)
    (root / "f").symlink_to(outside / "keep.txt")
    (root / temp_name("g")).symlink_to(outside / "keep.txt")
    before = snapshot(outside)
    src = make_tree(tmp_path / "src", {"x": b"new x", "f": b"new f", "g": b"new g"})

    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: backend.makedirs(["docs/new"]),
        lambda: backend.write_bytes("docs/x", b"x"),
        lambda: backend.open_temp("docs/x"),
        lambda: backend.hash_file("docs/keep.txt", BLAKE3),
        lambda: backend.remove("docs/keep.txt"),
        lambda: backend.remove("docs/sub"),
        lambda: backend.rename("docs/keep.txt", "stolen"),
        lambda: backend.symlink("docs/l", "target"),
    ]
    if backend.capabilities.posix_metadata:
        operations.append(lambda: backend.set_metadata("docs/sub", mode=0o777, mtime_ns=0))
        operations.append(lambda: backend.seal_folders([("docs/sub", 0o777, 0)]))
    for operation in operations:
        assert "docs" in await refused(operation)
    for read in (
        lambda: backend.stat(["docs/keep.txt"]),
        lambda: backend.read_bytes("docs/keep.txt"),
    ):
        try:
            assert await read() in ([None], None)  # nothing lies beyond a link
        except DestinationError as exc:
            assert "docs" in str(exc)
    walked = {path: st.kind for path, st in await backend.walk("")}
    assert walked["docs"] == "symlink" and not any(p.startswith("docs/") for p in walked)

    transfers = [
        FileTransfer(name, source_for(src / name.rpartition("/")[2]), 0o644, MTIME)
        for name in ("docs/x", "f", "g")
    ]
    await backend.put_files(transfers, BLAKE3)
    assert transfers[0].error is not None and "docs" in str(transfers[0].error)
    assert [t.error for t in transfers[1:]] == [None, None]
    assert (root / "f").read_bytes() == b"new f" and not (root / "f").is_symlink()
    assert (root / "g").read_bytes() == b"new g"
    assert temp_name("g") not in os.listdir(root)  # the planted link went, not its target
    assert snapshot(outside) == before
    assert not (root / "stolen").exists()


# -- metadata -----------------------------------------------------------------------------


async def test_metadata_is_kept_where_declared_and_never_touched_elsewhere(
    dest: Dest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = dest.backend
    posix = backend.capabilities.posix_metadata
    src = make_tree(tmp_path / "src", {"m.bin": os.urandom(100_000)})
    await backend.makedirs(["d"])
    if not posix:

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"metadata call on a no-metadata destination: {args}")

        for name in ("chmod", "fchmod", "lchmod", "utime", "chown", "fchown", "lchown"):
            if hasattr(os, name):
                monkeypatch.setattr(os, name, forbidden)
    transfer = FileTransfer("d/m.bin", source_for(src / "m.bin"), 0o640, MTIME, readback=True)
    await backend.put_files([transfer], BLAKE3)
    await backend.write_bytes("d/small", b"small")
    await backend.set_metadata("d", mode=0o750, mtime_ns=MTIME)
    monkeypatch.undo()
    assert transfer.error is None
    st_file, st_dir = await backend.stat(["d/m.bin", "d"])
    assert st_file is not None and st_dir is not None
    if posix:
        assert (st_file.mode, st_file.mtime_ns) == (0o640, MTIME)
        assert (st_dir.mode, st_dir.mtime_ns) == (0o750, MTIME)
    else:
        assert st_file.mtime_ns != MTIME and st_dir.mtime_ns != MTIME


async def test_every_folder_is_sealed_and_the_first_failure_raised_after(dest: Dest) -> None:
    backend = dest.backend
    await backend.makedirs(["a", "c"])
    sealed = [("a", 0o750, MTIME), ("missing", 0o750, MTIME), ("c", 0o750, MTIME)]
    if not backend.capabilities.posix_metadata:
        await backend.seal_folders(sealed)  # never touched: nothing to fail
        return
    with pytest.raises(DestinationError, match="missing"):
        await backend.seal_folders(sealed)
    for st in await backend.stat(["a", "c"]):
        assert st is not None and (st.mode, st.mtime_ns) == (0o750, MTIME)


async def test_commit_returns_the_mtime_stat_reports(dest: Dest, tmp_path: Path) -> None:
    backend = dest.backend
    returned = []
    for path, mtime in (("a", None), ("b", MTIME)):
        writer = await backend.open_temp(path)
        await writer.write(b"content")
        returned.append(await writer.commit(mode=0o644, mtime_ns=mtime))
    src = make_tree(tmp_path / "src", {"c": os.urandom(2 * MiB), "d": b"d"})
    transfers = [
        FileTransfer("c", source_for(src / "c"), 0o644, MTIME),
        FileTransfer("d", source_for(src / "d"), 0o644, MTIME),
    ]
    await backend.put_files(transfers, BLAKE3)
    returned += [t.dest_mtime_ns for t in transfers]
    stats = await backend.stat(["a", "b", "c", "d"])
    assert returned == [st.mtime_ns if st else None for st in stats]


# -- names ----------------------------------------------------------------------------------


async def test_odd_names_are_stored_as_given(dest: Dest, tmp_path: Path) -> None:
    """Spaces, unicode, a leading dash, a line feed…; what a file system cannot hold is named."""
    backend, root = dest.backend, dest.root
    problems = backend.name_problems(ODD_NAMES)
    flagged = {n for n in ODD_NAMES if any(p.startswith(f"{n}: ") for p in problems)}
    assert len(flagged) == len(problems)
    names = [n for n in ODD_NAMES if n not in flagged]
    assert "-leading-dash" in names and "with space.txt" in names
    if dest.kind != "ntfs":
        assert names == ODD_NAMES
    files = {name: f"content of {name!r}".encode() for name in names}
    src = make_tree(tmp_path / "src", {f"n{i}": data for i, data in enumerate(files.values())})
    await backend.makedirs(sorted({n.rpartition("/")[0] for n in names} - {""}))
    sources = [source_for(src / f"n{i}") for i in range(len(names))]
    transfers = [
        FileTransfer(name, source, 0o644, MTIME, readback=True)
        for name, source in zip(names, sources, strict=True)
    ]
    await backend.put_files(transfers, BLAKE3)
    for transfer, source in zip(transfers, sources, strict=True):
        assert transfer.error is None, transfer.error
        assert transfer.readback_digest == source.digest()
    assert tree_content(root) == files
    walked = {path for path, st in await backend.walk("") if st.kind == "file"}
    assert walked == set(files)
    for name, data in files.items():
        assert await backend.hash_file(name, BLAKE3) == _blake3(data)
        assert await backend.read_bytes(name) == data
        await backend.rename(name, f"{name} moved")
        await backend.remove(f"{name} moved")
    assert [st for st in await backend.stat(names) if st is not None] == []


def _blake3(data: bytes) -> str:
    hasher = BLAKE3.new()
    hasher.update(data)
    return hasher.hexdigest()


# -- the rest of the interface ----------------------------------------------------------------


async def test_stat_walk_remove(dest: Dest) -> None:
    backend = dest.backend
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


async def test_small_files_round_trip(dest: Dest) -> None:
    backend = dest.backend
    assert await backend.read_bytes("m/x") is None
    await backend.write_bytes("m/x", b"first")
    await backend.write_bytes("m/x", b"second")
    assert await backend.read_bytes("m/x") == b"second"
    assert leftovers(dest.root) == []


async def test_hash_file_matches_local_hash(dest: Dest) -> None:
    backend = dest.backend
    data = os.urandom(300_000)
    await backend.write_bytes("h", data)
    for name in ("blake3", "sha256", "xxh128"):
        algorithm = get_algorithm(name)
        expected = algorithm.new()
        expected.update(data)
        assert await backend.hash_file("h", algorithm) == expected.hexdigest()


async def test_rename_moves_and_never_overwrites(dest: Dest) -> None:
    backend, root = dest.backend, dest.root
    await backend.makedirs(["new/sub", "old"])
    await backend.write_bytes("new/sub/f", b"new")
    await backend.write_bytes("old/f", b"old")
    await refused(lambda: backend.rename("new", "old"))
    assert (root / "old/f").read_bytes() == b"old"
    await backend.rename("new", "moved")
    assert (root / "moved/sub/f").read_bytes() == b"new"
    assert not (root / "new").exists()


async def test_engine_copy_and_verify_through_backend(dest: Dest, tmp_path: Path) -> None:
    backend, root = dest.backend, dest.root
    files = {f"dir{i % 3}/file{i}.bin": os.urandom(i * 7919) for i in range(30)}
    files["big/video.mp4"] = os.urandom(3 * MiB)
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
