"""`finalcopy copy` and `verify` as an operator runs them: exit codes, messages, crashes."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_cli
from tests.support.fixtures import tmpfs
from tests.support.trees import make_tree, tree_content
from tests.support.users import LocalUser

MiB = 1024 * 1024


def assert_clean_error(result: subprocess.CompletedProcess[str]) -> None:
    """One clear message: no Python traceback anywhere in the output."""
    assert "Traceback" not in result.stderr + result.stdout
    errors = result.stderr.splitlines()
    assert errors, result.stdout
    assert errors[-1].startswith("finalcopy: error: ") or "FAILED" in result.stderr


def test_copy_then_verify_ok_and_corruption_detected(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a/b.bin": os.urandom(200_000), "c.txt": b"c", "d/e": b""})
    dst = tmp_path / "dst"
    result = run_cli("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert "copied 3 file(s)" in result.stdout
    assert tree_content(dst) == tree_content(src)

    assert run_cli("verify", dst).returncode == 0

    with open(dst / "a/b.bin", "r+b") as f:  # flip one byte, keep the size
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 1]))
    (dst / "d/e").unlink()
    (dst / "intruder").write_bytes(b"?")
    result = run_cli("verify", dst)
    assert result.returncode == 1
    assert "changed: a/b.bin" in result.stdout
    assert "missing: d/e" in result.stdout
    assert "unexpected: intruder" in result.stdout


def test_json_output_is_events_then_summary(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": b"x" * 5000, "y": b"y"})
    result = run_cli("copy", src, tmp_path / "dst", "--json")
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "summary" and "plan" in kinds and kinds.count("file_done") == 2
    summary = events[-1]
    assert summary["ok"] is True and summary["copied"] == 2 and summary["bytes"] == 5001


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hash", "md5"], "finalcopy: error: --hash 'md5': is not one of"),
        (["--chunk-size", "lots"], "finalcopy: error: --chunk-size 'lots': not a size"),
        (["--chunk-size", "1"], "finalcopy: error: --chunk-size '1': must be between"),
        (["--verify", "maybe"], "finalcopy: error: --verify 'maybe': is not one of"),
        (["--metadata", "some"], "finalcopy: error: --metadata 'some': is not one of"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a"})
    result = run_cli("copy", src, tmp_path / "dst", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_destination_inside_source_exit_2(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"a"})
    result = run_cli("copy", src, src / "copy")
    assert result.returncode == 2
    assert "is inside the source" in result.stderr
    assert not (src / "copy").exists()


def test_unreadable_source_file_is_named_and_the_rest_copied(
    public_tmp_path: Path, unprivileged_user: LocalUser
) -> None:
    src = make_tree(public_tmp_path / "src", {"ok.txt": b"ok", "secret.txt": b"s"})
    for path in (src, src / "ok.txt", src / "secret.txt"):
        os.chown(path, unprivileged_user.uid, unprivileged_user.gid)
    (src / "secret.txt").chmod(0)
    dst = public_tmp_path / "dst"
    result = run_cli("copy", src, dst, user=unprivileged_user)
    assert result.returncode == 1
    assert f"cannot read '{src / 'secret.txt'}': Permission denied" in result.stdout
    assert (dst / "ok.txt").read_bytes() == b"ok"
    assert not (dst / "secret.txt").exists()
    assert_clean_error(result)


def test_unwritable_destination_exit_3(public_tmp_path: Path, unprivileged_user: LocalUser) -> None:
    src = make_tree(public_tmp_path / "src", {"a": b"a"})
    locked = public_tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = run_cli("copy", src, locked / "dst", user=unprivileged_user)
    assert result.returncode == 3
    assert "is not writable" in result.stderr and "Permission denied" in result.stderr
    assert_clean_error(result)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, to run out of space for real."""
    with tmpfs(tmp_path / "small", "4m") as mountpoint:
        yield mountpoint


def test_no_space_is_reported_before_copying(tmp_path: Path, small_tmpfs: Path) -> None:
    src = make_tree(tmp_path / "src", {"big": os.urandom(6 * MiB), "small": b"s"})
    result = run_cli("copy", src, small_tmpfs / "dst")
    assert result.returncode == 3
    assert "not enough space" in result.stderr
    assert_clean_error(result)


def fill(volume: Path) -> Path:
    """Take every free byte of ``volume``; return the filler file."""
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = b"\0" * 4096
        while True:
            os.write(fd, block)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_running_out_of_space_mid_copy_removes_partials(tmp_path: Path, small_tmpfs: Path) -> None:
    # The volume fills up after the free-space check, so the write itself hits ENOSPC.
    src = make_tree(tmp_path / "src", {"big": os.urandom(3 * MiB)})
    dst = small_tmpfs / "dst"
    for _attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "finalcopy", "copy", str(src), str(dst),
             "--chunk-size", "4K", "--jobs", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # The lock is taken after the free-space check, just before the files are written
        # (a "*.part" may appear earlier: the destination's capabilities are probed first).
        while proc.poll() is None and not (dst / ".finalcopy" / "lock").is_dir():
            pass
        filler = fill(small_tmpfs)
        out, err = proc.communicate(timeout=60)
        filler.unlink()
        if proc.returncode == 1:
            break
        subprocess.run(["rm", "-rf", str(dst)], check=True)  # the copy won the race: again
    assert proc.returncode == 1, out + err
    assert "No space left on device" in out
    leftovers = [p.name for p in dst.rglob("*") if p.is_file()]
    assert "big" not in leftovers and not any(n.endswith(".part") for n in leftovers)
    assert "Traceback" not in out + err


def big_tree(root: Path, files: int = 12, size: int = 24 * MiB) -> Path:
    block = os.urandom(MiB)
    for i in range(files):
        path = root / f"part{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for j in range(size // MiB):
                f.write(bytes([i, j % 256]) + block[2:])
    return root


def wait_for_committed_file(dst: Path, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if dst.is_dir() and any(p.suffix == ".bin" for p in dst.iterdir()):
            return
        time.sleep(0.005)
    raise AssertionError("the copy finished or stalled before it could be interrupted")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_temporaries_and_rerun_completes(tmp_path: Path, sig: int) -> None:
    src = big_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    proc = subprocess.Popen(
        [sys.executable, "-m", "finalcopy", "copy", str(src), str(dst), "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_committed_file(dst, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    assert not [p for p in dst.rglob("*.part")], "temporary files left behind"
    assert "Traceback" not in out + err

    result = run_cli("copy", src, dst, "--json")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 0 and summary["skipped"] >= 1
    assert summary["copied"] + summary["skipped"] == 12
    assert tree_content(dst) == tree_content(src)
    assert run_cli("verify", dst).returncode == 0


def test_kill_9_then_rerun_loses_nothing(tmp_path: Path) -> None:
    src = big_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    for delay in (0.0, 0.3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "finalcopy", "copy", str(src), str(dst), "--jobs", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_committed_file(dst, proc) if delay else time.sleep(0.4)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        # Whatever holds a final name is complete: never a prefix of its source.
        for path in dst.glob("*.bin"):
            assert path.read_bytes() == (src / path.name).read_bytes()
    result = run_cli("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert tree_content(dst) == tree_content(src)
    verify = run_cli("verify", dst)
    assert verify.returncode == 0 and "leftover" not in verify.stdout


def test_large_sparse_file_streams_with_flat_memory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:  # 1.2 GiB, sparse: cheap to make, real to read
        f.seek(1200 * MiB - 1)
        f.write(b"\1")
    dst = tmp_path / "dst"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = run_cli("copy", src, dst, "--verify", "readback")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert result.returncode == 0, result.stderr
    assert (dst / "huge.bin").stat().st_size == 1200 * MiB
    assert run_cli("verify", dst).returncode == 0
    if peak_kib > before:  # ru_maxrss of children is the max over all of them
        assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB for a 1.2 GiB file"
