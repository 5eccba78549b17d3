"""``finalcopy bench``: real copies on a local folder, an ntfs-3g mount and a real sshd.

Every test proves the promise the command makes to its user: the destination
is left exactly as it was found (same entries, sizes and mtimes), after a
good run, an interruption, or a refusal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from finalcopy.bench.folder import PREFIX, check_room
from finalcopy.bench.workload import estimated_bytes, generate_sized
from finalcopy.cli.app import app
from finalcopy.cli.options import TransferOptions
from finalcopy.errors import EXIT_DESTINATION, EXIT_INTERRUPTED, EXIT_USAGE, NoSpaceError
from tests.support.cli import REPO, cli_env, finalcopy_cmd, run_cli
from tests.support.fixtures import tmpfs
from tests.support.ntfs import NtfsMount
from tests.support.sftp import cli_identity, url
from tests.support.sshd import SshServer
from tests.support.trees import make_tree, snapshot

#: A workload of about 4 MiB, two settings, one run each: a few seconds.
TINY: tuple[str, ...] = ("--size", "4M", "--small-files", "50", "--runs", "1")
TINY += ("--jobs", "1,2", "--chunk-size", "64K")
MiB = 1 << 20


def occupied(dest: Path) -> dict[str, tuple[int, int]]:
    """What a user would find in ``dest``: a few files of theirs, put there by the test."""
    make_tree(dest, {"keep.txt": b"mine", "work/clip.mp4": os.urandom(10_000)})
    return as_found(dest)


def as_found(dest: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``dest`` with size and mtime, and ``dest``'s own mtime."""
    return {**snapshot(dest), ".": (0, dest.stat().st_mtime_ns)}


def leftovers() -> list[Path]:
    """Generated workloads or tool folders left in the temporary folders."""
    places = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    return [p for place in places if place.is_dir() for p in place.glob(f"{PREFIX}*")]


def check_json(stdout: str, settings: int, runs: int) -> dict[str, Any]:
    """The one JSON line: its shape, and figures that a real copy gives."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout  # nothing else on stdout
    data: dict[str, Any] = json.loads(lines[0])
    assert data["kind"] == "bench" and data["ok"] is True and data["interrupted"] is False
    assert {"cpu", "nproc", "kernel", "python", "finalcopy", "date"} <= data["machine"].keys()
    workload = data["workload"]
    assert workload["generated"] and workload["files"] == 9 * 3 + 5 + 50 + 48
    assert len(data["settings"]) == settings
    for setting in data["settings"]:
        assert {"jobs", "chunk_size", "algorithm", "verify", "label"} <= setting.keys()
        assert setting["error"] is None and len(setting["runs"]) == runs
        assert setting["mib_s"]["median"] > 0 and setting["files_s"]["median"] > 0
        assert sum(setting["phase_shares_percent"].values()) == pytest.approx(100, abs=0.5)
        for run in setting["runs"]:
            assert run["ok"] and run["bytes"] == workload["bytes"]
            assert run["files"] == workload["files"]
            assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_rss_bytes"] > 10 * MiB
            assert run["phases_s"]["stream"] > 0 and run["phases_s"]["verify"] > 0
    assert data["best"] in {s["label"] for s in data["settings"]}
    assert data["limit"] in {"cpu", "verification", "destination", "network"}
    return data


# -- local folder -----------------------------------------------------------------------------


def test_local_table_and_json_leave_the_destination_as_found(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    before = occupied(dest)
    before_leftovers = leftovers()

    result = run_cli("bench", dest, *TINY)
    assert result.returncode == 0, result.stderr
    assert "jobs · chunk · hash · verify" in result.stdout
    assert "1 · 64K · blake3 · readback" in result.stdout
    assert "2 · 64K · blake3 · readback" in result.stdout
    assert "MiB/s" in result.stdout and "Best: jobs " in result.stdout
    assert "in /dev/shm" in result.stderr or "system temporary folder" in result.stderr
    assert "run 1/1 · setting 2/2" in result.stderr
    assert as_found(dest) == before

    result = run_cli("bench", dest, *TINY, "--json")
    assert result.returncode == 0, result.stderr
    assert "bench:" not in result.stderr  # no progress with --json
    data = check_json(result.stdout, settings=2, runs=1)
    assert data["destination"]["kind"] == "local"
    assert [s["jobs"] for s in data["settings"]] == [1, 2]
    assert as_found(dest) == before
    assert leftovers() == before_leftovers


def test_compare_with_cp_and_save_svg(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    before = occupied(dest)
    picture = tmp_path / "bench.svg"
    result = run_cli(
        "bench", dest, *TINY, "--jobs", "2", "--runs", "2", "--compare", "cp,scp,rclone",
        "--save-svg", picture,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cp_row = next(line for line in result.stdout.splitlines() if line.strip().startswith("cp -r"))
    assert cp_row.rstrip().endswith("×"), cp_row  # the ratio to finalcopy
    assert "finalcopy (jobs 2 · 64K · blake3 · readback)" in result.stdout
    assert "scp: not for local destinations" in result.stdout
    if shutil.which("rclone") is None:
        assert "rclone: not installed" in result.stdout
    assert "compare 2/2 · cp -r" in result.stderr
    text = picture.read_text()
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert "finalcopy&#160;bench" in text or "finalcopy bench" in text
    assert as_found(dest) == before


def test_source_is_only_read(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "work", {f"p/clip{i}.mov": os.urandom(300_000) for i in range(5)})
    source_before, dest = snapshot(source), tmp_path / "dest"
    before = occupied(dest)
    args = ("--source", source, "--runs", "1", "--jobs", "2", "--chunk-size", "1M", "--json")
    result = run_cli("bench", dest, *args)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["workload"]["generated"] is False and data["workload"]["files"] == 5
    assert data["settings"][0]["runs"][0]["bytes"] == 1_500_000
    assert snapshot(source) == source_before and as_found(dest) == before
    quiet = run_cli("bench", dest, "--source", source, "--runs", "1", "--jobs", "1", "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")  # errors only
    missing = run_cli("bench", dest, "--source", tmp_path / "nothing")
    assert missing.returncode == EXIT_USAGE and "--source" in missing.stderr


def test_help_has_copy_s_transfer_options_and_the_panels_in_order() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    bench = {p.name: p for p in commands["bench"].params}
    copy = {p.name: p for p in commands["copy"].params}
    listed = {"hash_name", "chunk_size", "verify"}  # comma lists in bench
    for field in dataclasses.fields(TransferOptions):
        assert field.name in bench, field.name  # --bwlimit and whatever comes next
        if field.name not in listed:
            same = ("opts", "help", "default", "envvar")
            assert [getattr(bench[field.name], a) for a in same] == [
                getattr(copy[field.name], a) for a in same
            ]
    text = run_cli("bench", "-h").stdout
    panels = ("Benchmark", "Verification", "Destination and SSH", "Output", "Performance")
    places = [text.find(f"─ {panel} ") for panel in panels]
    assert -1 not in places and places == sorted(places), places
    assert "[default: 1,4]" in text and "[default: 64K,1M]" in text and "[default: 512M]" in text


def test_options_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    before = occupied(dest)
    refusals = {
        "--jobs 1,0": "--jobs '0': must be a whole number from 1 to 64",
        "--chunk-size 64K,32M": "--chunk-size '32M': must be between 4K and 16M",
        "--hash blake3,md5": "--hash 'md5': is not one of blake3, sha256, xxh128",
        "--verify maybe": "--verify 'maybe': is not one of readback, size, none",
        "--compare cp,robocopy": "--compare 'robocopy': is not one of",
        "--size 10K": "--size '10K': must be at least 1M",
    }
    for args, message in refusals.items():
        result = run_cli("bench", dest, *args.split())
        assert result.returncode == EXIT_USAGE, (args, result.stderr)
        assert result.stderr.startswith(f"finalcopy: error: {message}"), result.stderr
    missing = run_cli("bench", tmp_path / "missing", *TINY)
    assert missing.returncode == EXIT_DESTINATION, missing.stderr
    assert "is not an existing folder" in missing.stderr
    assert not (tmp_path / "missing").exists()
    assert as_found(dest) == before


# -- NTFS and SFTP -----------------------------------------------------------------------------


def test_ntfs_mount(ntfs_mount: NtfsMount) -> None:
    dest = ntfs_mount.mountpoint / "archive"
    before = occupied(dest)
    result = run_cli("bench", dest, *TINY, "--json")
    assert result.returncode == 0, result.stderr
    data = check_json(result.stdout, settings=2, runs=1)
    assert data["destination"]["kind"] == "ntfs"
    assert "fuseblk" in data["destination"]["strategy"]
    assert as_found(dest) == before
    assert sorted(p.name for p in ntfs_mount.mountpoint.iterdir()) == ["archive"]


def test_sftp_server_with_scp_compared(sshd_server: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    before = occupied(remote)
    env = {"HOME": str(tmp_path / "empty-home"), "SSH_AUTH_SOCK": ""}
    result = run_cli(
        "bench", url(sshd_server, remote), *TINY, *cli_identity(sshd_server), "--json",
        "--compare", "scp,cp", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = check_json(result.stdout, settings=2, runs=1)
    assert data["destination"]["kind"] == "sftp"
    tools = {t["key"]: t for t in data["compare"]["tools"]}
    assert tools["cp"]["skipped"] == "not for sftp destinations"
    assert tools["scp"]["error"] is None and tools["scp"]["ratio"] > 0
    after = as_found(remote)
    # SFTP (version 3) sets times in whole seconds: DEST's own mtime is back to the second.
    assert after.pop(".")[1] // 10**9 == before.pop(".")[1] // 10**9
    assert after == before


# -- interruption and refusal ------------------------------------------------------------------


def test_ctrl_c_stops_and_leaves_the_destination_as_found(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    before = occupied(dest)
    before_leftovers = leftovers()
    args = ("--size", "256M", "--runs", "3", "--jobs", "1", "--chunk-size", "64K")
    proc = subprocess.Popen(
        finalcopy_cmd("bench", dest, *args),
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the first run has started copying
        seen.append(line)
        if "run 1/3" in line:
            break
    deadline = time.monotonic() + 30
    while not any(dest.glob(f"{PREFIX}*/run-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(dest.glob(f"{PREFIX}*/run-*")), seen  # it is copying now
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, "".join(seen) + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert stdout == ""
    assert as_found(dest) == before
    assert leftovers() == before_leftovers


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a destination far too small for the benchmark."""
    with tmpfs(tmp_path / "small", "16m") as mountpoint:
        yield mountpoint


def test_refuses_a_destination_without_room(small_tmpfs: Path) -> None:
    before = occupied(small_tmpfs)
    before_leftovers = leftovers()
    result = run_cli("bench", small_tmpfs, "--size", "64M")
    assert result.returncode == EXIT_DESTINATION, result.stderr
    assert result.stderr.startswith("finalcopy: error: not enough space on ")
    assert "use a smaller --size" in result.stderr
    assert result.stdout == ""
    assert as_found(small_tmpfs) == before
    assert leftovers() == before_leftovers  # not even the workload was generated


def test_unknown_free_space_is_a_warning_not_a_refusal() -> None:
    warning = check_room(None, 64 * MiB, "sftp://nas/x")
    assert warning is not None and "unknown" in warning and "64 MiB" in warning
    assert check_room(65 * MiB, 64 * MiB, "/x") is None
    with pytest.raises(NoSpaceError, match="needs 64 MiB"):
        check_room(63 * MiB, 64 * MiB, "/x")


# -- the workload, and the repository's benchmarks on the same code ----------------------------


def test_sized_workload_is_deterministic_and_shaped(tmp_path: Path) -> None:
    first = generate_sized(tmp_path / "a", 8 * MiB, 20)
    assert generate_sized(tmp_path / "b", 8 * MiB, 20) == first
    files, total = first
    assert files == 9 * 3 + 5 + 20 + 48
    assert 7 * MiB < total <= estimated_bytes(8 * MiB, 20)
    thumbs = sorted((tmp_path / "a").rglob("thumb_*.jpg"))
    assert len(thumbs) == 20
    assert [p.read_bytes() for p in thumbs] == [
        (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in thumbs
    ]
    assert len(list((tmp_path / "a").rglob("*_tracking.json"))) == 9


def test_benchmarks_harness_runs_on_the_packaged_code(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.run", "--workload", "small", "--scale", "0.01",
               "--runs", "1", "--tools", "finalcopy,cp", "--dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "| finalcopy |" in result.stdout and "| cp -r |" in result.stdout
    assert "finalcopy bench" in (REPO / "benchmarks" / "README.md").read_text()
