"""The engine on real files: content, metadata, manifests, re-runs, odd names, scale."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from finalcopy.backends.local import LocalBackend
from finalcopy.engine import (
    CopyOptions,
    CopyReport,
    Event,
    FileFinished,
    Notice,
    copy_tree,
    verify_tree,
)
from finalcopy.engine.manifest import format_manifest, parse_manifest
from finalcopy.engine.plan import Listed, Plan, scan
from finalcopy.errors import SourceError, UsageError
from tests.support.fixtures import require_tool
from tests.support.trees import make_tree, tree_content

pytestmark = pytest.mark.anyio

ODD_NAMES = {
    "unicode/été à Zürich ✓.txt": b"accents",
    "with space/a b.csv": b"1,2\n",
    "-leading-dash": b"dash",
    "--help": b"not an option",
    "new\nline": b"newline in name",
    "back\\slash": b"backslash in name",
    "tab\there": b"tab",
}


def sample_tree(root: Path) -> Path:
    make_tree(
        root,
        {
            "empty": b"",
            "projet/docs/video1.mp4": os.urandom(3 * 1024 * 1024 + 17),
            "projet/docs/video1.csv": b"No,Timecode In,Timecode Out\n1,00:00,00:01\n",
            "projet/docs/video1_tracking.json": b'{"frames": []}',
            "deep/" + "/".join(f"d{i}" for i in range(30)) + "/leaf": b"deep",
            **ODD_NAMES,
        },
    )
    os.symlink("projet/docs/video1.csv", root / "link-to-csv")
    os.symlink("does-not-exist", root / "dangling")
    return root


async def copy(src: Path, dst: Path, **options: Any) -> tuple[CopyReport, list[Event]]:
    events: list[Event] = []
    backend = LocalBackend(dst)
    report = await copy_tree(src, backend, CopyOptions(**options), events=events.append)
    return report, events


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "xxh128"])
async def test_copy_is_identical_and_manifest_checks_with_standard_tool(
    tmp_path: Path, algorithm: str
) -> None:
    src = sample_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    report, _ = await copy(src, dst, algorithm=algorithm)
    assert report.ok, report.failed
    assert tree_content(dst) == tree_content(src)
    assert os.readlink(dst / "link-to-csv") == "projet/docs/video1.csv"
    assert os.readlink(dst / "dangling") == "does-not-exist"
    checker = require_tool(
        {"blake3": "b3sum", "sha256": "sha256sum", "xxh128": "xxh128sum"}[algorithm]
    )
    manifest = f".finalcopy/manifest.{algorithm}"
    process = await anyio.run_process([checker, "-c", manifest], cwd=dst, check=False)
    result_out = process.stdout.decode()
    assert process.returncode == 0, result_out + process.stderr.decode()
    checked = len(tree_content(src))
    if algorithm == "xxh128":
        # xxh128sum 0.8 cannot read names with line breaks (it has no escaping).
        checked -= sum("\n" in name or "\r" in name for name in tree_content(src))
    assert result_out.count(": OK") == checked


async def test_mode_and_mtime_are_preserved(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"ro.txt": b"x", "exec.sh": b"#!/bin/sh\n", "d/f": b"f"})
    (src / "ro.txt").chmod(0o444)
    (src / "exec.sh").chmod(0o750)
    os.utime(src / "d/f", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    os.utime(src / "d", ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
    dst = tmp_path / "dst"
    await copy(src, dst)
    assert stat.S_IMODE((dst / "ro.txt").stat().st_mode) == 0o444
    assert stat.S_IMODE((dst / "exec.sh").stat().st_mode) == 0o750
    assert (dst / "d/f").stat().st_mtime_ns == 1_500_000_000_123_456_789
    assert (dst / "d").stat().st_mtime_ns == 1_400_000_000_000_000_000


async def test_special_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a"})
    os.mkfifo(src / "pipe")
    report, events = await copy(src, tmp_path / "dst")
    assert report.ok
    assert not (tmp_path / "dst/pipe").exists()
    warnings = [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert any("pipe" in w and "special" in w for w in warnings)


async def test_rerun_skips_verified_files_and_recopies_changed_ones(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {f"f{i}": os.urandom(1000 + i) for i in range(20)})
    dst = tmp_path / "dst"
    first, _ = await copy(src, dst)
    assert first.copied == 20

    again, events = await copy(src, dst)
    assert (again.copied, again.skipped) == (0, 20)
    assert {e.outcome for e in events if isinstance(e, FileFinished)} == {"skipped"}

    (src / "f3").write_bytes(b"source changed")
    (dst / "f5").write_bytes(b"destination tampered")
    (dst / "f7").unlink()
    third, _ = await copy(src, dst)
    assert third.copied == 3 and third.skipped == 17
    assert tree_content(dst) == tree_content(src)
    assert (await verify_tree(LocalBackend(dst))).ok


async def test_checksum_mode_decides_by_content(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"same", "b": b"differs"})
    dst = make_tree(tmp_path / "dst", {"a": b"same", "b": b"DIFFERS"})  # no state file
    report, _ = await copy(src, dst, checksum=True)
    assert (report.copied, report.skipped) == (1, 1)
    assert (dst / "b").read_bytes() == b"differs"


async def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a", "b/c": b"c"})
    report, _ = await copy(src, tmp_path / "dst", dry_run=True)
    assert report.files == 2 and report.dry_run
    assert not (tmp_path / "dst").exists()


async def test_ten_thousand_small_files(tmp_path: Path) -> None:
    files = {f"d{i % 100:03d}/f{i:05d}.bin": i.to_bytes(4, "big") * 1024 for i in range(10_000)}
    src = make_tree(tmp_path / "src", files)
    dst = tmp_path / "dst"
    report, _ = await copy(src, dst)
    assert report.copied == 10_000 and report.ok
    assert tree_content(dst) == files
    assert len(parse_manifest((dst / ".finalcopy/manifest.blake3").read_bytes())) == 10_000


async def test_source_changing_size_during_copy_fails_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"grows": b"x" * 100_000, "ok": b"fine"})

    def scan_then_grow(
        root: Path, listed: Listed | None = None, cancel: threading.Event | None = None
    ) -> Plan:
        plan = scan(root, listed, cancel)
        with open(root / "grows", "ab") as f:
            f.write(b"more")
        return plan

    monkeypatch.setattr("finalcopy.engine.copier.scan", scan_then_grow)
    report, _ = await copy(src, tmp_path / "dst")
    assert "grows" in report.failed and "changed size" in report.failed["grows"]
    assert not (tmp_path / "dst/grows").exists()
    assert (tmp_path / "dst/ok").read_bytes() == b"fine"


async def test_source_rewritten_at_the_same_size_during_copy_fails_that_file(
    tmp_path: Path,
) -> None:
    """Same size, other bytes, a new mtime while it is read: that file fails, never kept."""
    size = 3 << 20  # several blocks: the rewrite lands between two reads
    src = make_tree(tmp_path / "src", {"video.bin": b"a" * size, "ok": b"fine"})
    path = src / "video.bin"

    class RewriteOnce:
        done = False

        def feed(self, chunk: memoryview) -> None:
            if not RewriteOnce.done:
                RewriteOnce.done = True
                path.write_bytes(b"b" * size)
                os.utime(path, ns=(1, 1))  # an mtime that cannot be the one planned

        def finish(self) -> None:
            pass

    report, _ = await copy(
        src,
        tmp_path / "dst",
        inspectors=lambda rel: RewriteOnce if rel == "video.bin" else None,
    )
    assert "modified while being copied" in report.failed["video.bin"]
    assert not (tmp_path / "dst/video.bin").exists()
    assert (tmp_path / "dst/ok").read_bytes() == b"fine"


async def test_destination_inside_source_is_refused(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a"})
    with pytest.raises(UsageError, match="inside the source"):
        await copy(src, src / "backup")
    with pytest.raises(UsageError, match="inside the source"):
        await copy(src, src)


async def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="No such file"):
        await copy(tmp_path / "nope", tmp_path / "dst")


def test_manifest_escaping_round_trips() -> None:
    digests = {"plain": "aa", "new\nline": "bb", "back\\slash": "cc", "cr\rname": "dd"}
    data = format_manifest(digests)
    assert b"\\bb  new\\nline\n" in data
    assert b"\\cc  back\\\\slash\n" in data
    assert parse_manifest(data) == digests
