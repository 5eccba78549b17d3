"""The engine's steps on their own: the pure skip decision, the injected clock, and
``.finalcopy/`` files streamed through the backend's one write primitive."""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import blake3
import pytest

from finalcopy.backends.base import Backend, DestStat, FileTransfer, TempWriter, join
from finalcopy.backends.local import LocalBackend
from finalcopy.backends.local import lanes as local_lanes
from finalcopy.backends.local import sending as local_sending
from finalcopy.engine import CopyOptions, Event, Retry, copy_tree, verify_tree
from finalcopy.engine import copier as copier_module
from finalcopy.engine import ledger as ledger_module
from finalcopy.engine import plan as plan_module
from finalcopy.engine.events import Listing, PlanReady
from finalcopy.engine.layout import Layout
from finalcopy.engine.manifest import format_manifest
from finalcopy.engine.plan import PlannedFile, scan
from finalcopy.engine.skip import hinted_by_records, matching_records, same_size
from finalcopy.engine.source import FileChunkSource
from finalcopy.engine.state import StateRecord
from finalcopy.errors import ConnectionLostError, DestinationError, Interrupted
from finalcopy.hashing import Algorithm, get_algorithm
from finalcopy.tree import walk_tree
from tests.support.trees import make_tree, tree_content

pytestmark = pytest.mark.anyio

DIGEST = "ab" * 32
BLAKE3 = get_algorithm("blake3")


def planned(path: str, size: int = 10, mtime_ns: int = 5) -> PlannedFile:
    return PlannedFile(path, size, 0o644, mtime_ns)


def record(
    path: str, size: int = 10, source_mtime_ns: int = 5, dest_mtime_ns: int = 7
) -> StateRecord:
    return StateRecord(path, size, source_mtime_ns, dest_mtime_ns, "blake3", DIGEST)


def test_the_skip_decision_trusts_only_records_matching_both_sides() -> None:
    files = [planned(name) for name in ("same", "source-moved", "dest-moved", "gone", "new")]
    records = {
        "same": record("same"),
        "source-moved": record("source-moved", source_mtime_ns=4),
        "dest-moved": record("dest-moved"),
        "gone": record("gone"),
        "other-algo": record("other-algo"),
    }
    worth = matching_records(files, records, "blake3")
    assert [f.path for f in worth] == ["same", "dest-moved", "gone"]
    assert matching_records(files, records, "sha256") == []
    stats = {
        "same": DestStat("file", 10, 7, 0o644),
        "dest-moved": DestStat("file", 10, 8, 0o644),
        "gone": None,
    }
    decision = hinted_by_records(files, records, stats, "blake3")
    assert [f.path for f in decision.candidates] == ["same"]
    assert [f.path for f in decision.send] == ["source-moved", "dest-moved", "gone", "new"]


def test_join_of_two_parts_is_the_general_join() -> None:
    # Two parts take a shorter road (once or more per file); a third, empty part does not.
    parts = ["", "/", "a", "/a", "a/", "/a/", "a/b", "//", "dir/.fc-0123456789abcdef.part"]
    for head, tail in itertools.product(parts, repeat=2):
        assert join(head, tail) == join(head, tail, ""), (head, tail)
    assert join("", "a/b/") == "a/b" and join("d/", "/n") == "d/n" and join("d", "") == "d"


def test_checksum_candidates_are_regular_files_of_the_source_size() -> None:
    files = [planned("a"), planned("b"), planned("c"), planned("d")]
    stats = {
        "a": DestStat("file", 10, 1, 0o644),
        "b": DestStat("file", 11, 1, 0o644),
        "c": DestStat("symlink", 10, 1, 0o777),
    }
    decision = same_size(files, stats)
    assert [f.path for f in decision.candidates] == ["a"]
    assert [f.path for f in decision.send] == ["b", "c", "d"]


class RecordingBackend(LocalBackend):
    """A local backend that notes what is written through ``open_temp``, and may fail it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: dict[str, list[int]] = {}
        """Path → size of every write made through ``open_temp``."""
        self.opened: Counter[str] = Counter()
        self.drop_next: set[str] = set()

    async def open_temp(self, path: str, temp: str = "") -> TempWriter:
        writer = await super().open_temp(path, temp)
        self.opened[path] += 1
        sizes = self.writes.setdefault(path, [])
        drop = path in self.drop_next
        self.drop_next.discard(path)
        backend_write = writer.write

        async def write(data: bytes | memoryview) -> None:
            if drop:
                raise ConnectionLostError(f"dropped while writing '{path}'")
            sizes.append(len(data))
            await backend_write(data)

        writer.write = write  # type: ignore[method-assign]
        return writer


def small_tree(root: Path, count: int) -> Path:
    return make_tree(root, {f"d{i % 7}/f{i:04d}.txt": f"file {i}\n".encode() for i in range(count)})


async def test_the_clock_paces_checkpoints_and_times_the_copy(tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src", 300)  # 5 batches of small files
    options = CopyOptions(jobs=1, verify="size")

    frozen = RecordingBackend(tmp_path / "frozen")
    report = await copy_tree(src, frozen, options, clock=lambda: 100.0)
    assert report.ok and report.duration == 0.0
    assert frozen.opened[".finalcopy/state.jsonl"] == 1  # the final one only

    ticks = itertools.count(0, 10.0)  # ten seconds pass between any two readings
    racing = RecordingBackend(tmp_path / "racing")
    report = await copy_tree(src, racing, options, clock=lambda: next(ticks))
    assert report.ok and report.duration > 0
    assert racing.opened[".finalcopy/state.jsonl"] == 5 + 1  # after each batch, and the final


async def test_a_costly_state_is_rewritten_less_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint rewrites the whole state: one that takes 1 s to write waits 20 s, not 2 s,
    so checkpoints take at most 5 % of a copy however many files it has (not quadratic)."""
    src = small_tree(tmp_path / "src", 30)
    backend = RecordingBackend(tmp_path / "dst")
    now = 0.0
    ledger = ledger_module.Ledger(Layout(backend, "", scan(src)), BLAKE3, clock=lambda: now)
    writes = itertools.count(0, 1.0)  # each write's real cost, as measured: 1 s
    monkeypatch.setattr(ledger_module, "perf_counter", lambda: next(writes))
    await ledger.write_state()
    for now, expected in ((2.0, 1), (19.9, 1), (20.0, 2), (22.0, 2), (40.0, 3)):
        await ledger.checkpoint()
        assert backend.opened[".finalcopy/state.jsonl"] == expected, now
    assert ledger_module.CHECKPOINT_SHARE == 0.05


async def test_the_manifest_streams_in_chunks_and_is_what_format_manifest_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "CHUNK_BYTES", 1000)
    src = small_tree(tmp_path / "src", 200)
    backend = RecordingBackend(tmp_path / "dst")
    report = await copy_tree(src, backend)
    assert report.ok
    chunks = backend.writes[".finalcopy/manifest.blake3"]
    assert len(chunks) > 10 and max(chunks) < 1200
    manifest = (tmp_path / "dst/.finalcopy/manifest.blake3").read_bytes()
    assert manifest == format_manifest(report.digests, algorithm="blake3")
    assert sum(chunks) == len(manifest)


async def test_a_dropped_connection_starts_a_metadata_file_over(tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src", 20)
    backend = RecordingBackend(tmp_path / "dst")
    backend.drop_next.add(".finalcopy/manifest.blake3")
    events: list[Event] = []
    report = await copy_tree(src, backend, events=events.append)
    assert report.ok
    assert [e.attempt for e in events if isinstance(e, Retry)] == [2]
    assert (await verify_tree(LocalBackend(tmp_path / "dst"))).ok
    leftovers = [
        p.name for p in (tmp_path / "dst/.finalcopy").iterdir() if p.name.startswith(".fc-")
    ]
    assert leftovers == []


async def test_a_failed_metadata_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    src = small_tree(tmp_path / "src", 20)
    backend = LocalBackend(tmp_path / "dst")

    async def refuse(*args: object, **kwargs: object) -> int:
        raise DestinationError("the disk said no")

    opened = backend.open_temp

    async def open_temp(path: str, temp: str = "") -> TempWriter:
        writer = await opened(path, temp)
        if path.endswith("manifest.blake3"):
            writer.commit = refuse  # type: ignore[method-assign]
        return writer

    backend.open_temp = open_temp  # type: ignore[method-assign]
    with pytest.raises(DestinationError, match="the disk said no"):
        await copy_tree(src, backend)
    left = [p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*")]
    assert ".finalcopy/manifest.blake3" not in left
    assert [p for p in left if p.rpartition("/")[2].startswith(".fc-")] == []


async def test_on_a_memory_file_system_files_in_flight_are_bounded_by_the_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On tmpfs (no device: all CPU) one batch of small files at a time, and at most one
    file or batch per CPU; the copy is the same as anywhere else."""
    files = {f"d{i % 5}/f{i:03d}.txt": f"file {i}\n".encode() for i in range(300)}
    files.update({f"big{i}.bin": bytes([i]) * (2 << 20) for i in range(6)})
    src = make_tree(tmp_path / "src", files)
    monkeypatch.setattr(local_lanes, "cores", lambda: 2)
    backend = LocalBackend(tmp_path / "dst", drop_cache=False)
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    lock = threading.Lock()
    real_put_batch = backend._put_batch

    def put_batch(transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        kinds = ("all", "small") if len(transfers) > 1 else ("all",)
        with lock:
            running.update(kinds)
            most.update({k: max(0, running[k] - most[k]) for k in kinds})
        time.sleep(0.01)  # long enough for the others to try to start
        try:
            real_put_batch(transfers, algorithm)
        finally:
            with lock:
                running.subtract(kinds)

    monkeypatch.setattr(backend, "_put_batch", put_batch)
    report = await copy_tree(src, backend, CopyOptions(jobs=4))
    assert report.ok and report.copied == len(files)
    assert tree_content(tmp_path / "dst") == files
    assert most["small"] == 1 and most["all"] == 2


@pytest.mark.parametrize("size", [0, 100])
def test_read_many_at_the_end_of_a_file_returns_no_chunk(tmp_path: Path, size: int) -> None:
    """Fewer chunks than asked is the end; at the end, none: an empty list, never ``[b""]``."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * size)
    source = FileChunkSource(path, size, BLAKE3, 64 * 1024, threading.Event())
    first = source.read_many(1, 4096)
    assert first == ([b"x" * size] if size else [])
    assert source.read_many(1, 4096) == []
    assert source.read_many(4) == []


async def test_a_failed_read_back_is_left_to_the_engine_to_hash_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_files' contract: a read-back that fails leaves ``readback_digest`` None (the file
    is committed); the engine hashes it through ``hash_file`` and records it as written."""
    files = {f"f{i}.txt": f"file {i}\n".encode() for i in range(3)}
    src = make_tree(tmp_path / "src", files)
    real = local_sending.hash_at
    failures: list[str] = []

    def flaky(dir_fd: int, name: str, algorithm: Algorithm, drop: bool) -> str:
        if not failures:
            failures.append(name)
            raise OSError(errno.EIO, "read error")
        return real(dir_fd, name, algorithm, drop)

    monkeypatch.setattr(local_sending, "hash_at", flaky)
    options = CopyOptions(keep_proofs=True)
    report = await copy_tree(src, LocalBackend(tmp_path / "dst"), options)
    assert failures and report.ok and report.copied == len(files), report.failed
    assert len(report.written) == len(files)
    assert tree_content(tmp_path / "dst") == files


@pytest.mark.parametrize("keep", [False, True])
async def test_the_deletion_proofs_are_kept_only_when_asked(tmp_path: Path, keep: bool) -> None:
    """A plain copy of a large tree does not hold, per file, what only the pipeline's
    deletion and rollback read; the pipeline's copy has them all, digests included."""
    files = {f"d/f{i}.txt": f"file {i}\n".encode() for i in range(3)}
    src = make_tree(tmp_path / "src", files)
    (src / "link").symlink_to("d/f0.txt")
    report = await copy_tree(src, LocalBackend(tmp_path / "dst"), CopyOptions(keep_proofs=keep))
    assert report.ok and report.copied == len(files)
    digests = {rel: blake3.blake3(data).hexdigest() for rel, data in files.items()}
    assert dict(report.digests) == digests
    if keep:
        assert sorted(report.written) == sorted([*files, "link"])
        assert report.proven == dict(report.digests)
        assert sorted(report.seen) == sorted(files)
    else:
        assert (report.written, report.proven, report.seen) == ([], {}, {})


async def test_a_plain_copy_holds_under_a_kilobyte_per_file(tmp_path: Path) -> None:
    """The memory a copy holds grows with its tree; the bar is the slope, not a total.

    Measured as the growth of tracemalloc's peak from 500 to 8,500 one-byte
    files: about 850 bytes per file for a plain copy (the plan, the records,
    the manifest's sort), 1,200 when the deletion proofs are kept, 1,350
    before the plan dropped its second path string.
    """

    async def peak(files: int) -> int:
        src = tmp_path / f"src{files}"
        make_tree(src, {f"d{i // 100:03}/frame_{i:06}.jpg": b"x" for i in range(files)})
        tracemalloc.start()
        try:
            await copy_tree(src, LocalBackend(tmp_path / f"dst{files}"), CopyOptions())
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    await peak(50)  # first-use allocations (imports, caches) out of the way
    slope = (await peak(8_500) - await peak(500)) / 8_000
    assert slope < 1_000, f"{slope:.0f} bytes per file"


async def test_a_copy_whose_check_could_not_run_stays_in_place_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost connection while the committed file is hashed proves nothing wrong: the
    file keeps its name (its previous content is already replaced) but no record, the
    copy fails, and a re-run proves it. Only a file proven wrong is removed."""
    files = {"a.txt": b"alpha\n", "d/b.txt": b"beta\n"}
    src, dst = make_tree(tmp_path / "src", files), tmp_path / "dst"

    def no_read_back(dir_fd: int, name: str, algorithm: Algorithm, drop: bool) -> str:
        raise OSError(errno.EIO, "read error")

    class Unreachable(LocalBackend):
        async def hash_file(self, path: str, algorithm: Algorithm) -> str:
            raise ConnectionLostError(f"connection lost while hashing '{path}'")

    with monkeypatch.context() as patch:
        patch.setattr(local_sending, "hash_at", no_read_back)
        report = await copy_tree(src, Unreachable(dst), CopyOptions())
    assert sorted(report.failed) == sorted(files) and "connection lost" in report.failed["a.txt"]
    assert tree_content(dst) == files and dict(report.digests) == {}
    again = await copy_tree(src, LocalBackend(dst), CopyOptions())
    assert again.ok and sorted(again.digests) == sorted(files)
    assert tree_content(dst) == files


async def test_folders_are_sealed_several_at_once_and_all_tried(tmp_path: Path) -> None:
    """Over SFTP a seal is a round trip: they overlap. One that fails does not stop the
    others, and the copy reports it as one finalcopy error, not an exception group."""
    files = {f"p{i}/sub/f.txt": b"x" for i in range(12)}
    src = make_tree(tmp_path / "src", files)
    for folder in sorted(src.rglob("*"), reverse=True):
        if folder.is_dir():
            os.utime(folder, ns=(1_000_000_000, 1_000_000_000))
    in_flight, most = 0, 0

    class Latent(LocalBackend):
        seal_folders = Backend.seal_folders  # the default, as over SFTP (not one thread hop)

        async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await anyio.sleep(0.01)  # a round trip
            in_flight -= 1
            if path == "p3":
                raise DestinationError("cannot set metadata of 'p3': refused")
            await super().set_metadata(path, mode=mode, mtime_ns=mtime_ns)

    with pytest.raises(DestinationError, match="p3"):
        await copy_tree(src, Latent(tmp_path / "dst"), CopyOptions())
    assert most > 1
    sealed = [d for d in (tmp_path / "dst").rglob("*") if d.is_dir() and d.name != ".finalcopy"]
    assert len(sealed) == 24
    assert {d.stat().st_mtime_ns for d in sealed if d.name != "p3"} == {1_000_000_000}


async def test_a_long_listing_of_the_source_is_shown_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree of millions of files takes minutes to list: the operator sees the count grow
    (``listing`` events, before the plan); a short listing says nothing."""
    src = make_tree(tmp_path / "src", {f"d{i // 10}/f{i:03d}": b"x" * i for i in range(60)})
    seen: list[Event] = []
    await copy_tree(src, LocalBackend(tmp_path / "quick"), CopyOptions(), events=seen.append)
    assert not [e for e in seen if isinstance(e, Listing)]

    real_walk = walk_tree

    def slow_walk(*args: Any, **kwargs: Any) -> Iterator[tuple[str, os.stat_result]]:
        for entry in real_walk(*args, **kwargs):
            time.sleep(0.005)  # a slow disk, or a network file system
            yield entry

    monkeypatch.setattr(plan_module, "walk_tree", slow_walk)
    monkeypatch.setattr(copier_module, "LISTING_SECONDS", 0.02)
    seen.clear()
    await copy_tree(src, LocalBackend(tmp_path / "slow"), CopyOptions(), events=seen.append)
    listing = [e for e in seen if isinstance(e, Listing)]
    first_plan = next(i for i, e in enumerate(seen) if isinstance(e, PlanReady))
    assert len(listing) >= 3 and all(seen.index(e) < first_plan for e in listing)
    counts = [(e.files, e.bytes) for e in listing]
    assert counts == sorted(counts) and counts[-1][0] <= 60 and counts[-1][0] > counts[0][0]


async def test_an_interrupt_stops_a_long_listing_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while millions of files are listed: the walk stops at once, not at its end,
    and the destination is never touched."""
    src = make_tree(tmp_path / "src", {f"f{i:03d}": b"x" for i in range(60)})
    walked: list[str] = []

    def slow_walk(*args: Any, **kwargs: Any) -> Iterator[tuple[str, os.stat_result]]:
        for rel, st in walk_tree(*args, **kwargs):
            walked.append(rel)
            time.sleep(0.05)
            yield rel, st

    monkeypatch.setattr(plan_module, "walk_tree", slow_walk)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Interrupted, match="listing"):
        await copy_tree(src, LocalBackend(tmp_path / "dst"), CopyOptions(), cancel=cancel)
    assert 0 < len(walked) < 60
    assert not (tmp_path / "dst").exists()
