"""Crashes, signals and concurrent runs: real processes, really killed.

The invariant after any of them plus a re-run: every source byte is at the
destination with the same hash, nothing is lost, each project was
finalized exactly once, and no temporary file is left behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import REPO, cli_env, finalcopy_cmd, run_cli
from tests.support.pipeline import project_files, read_log
from tests.support.trees import digests
from tests.support.trees import make_tree as write_tree

PROJECTS = ("projet_a", "projet_b")


def _workload(base: Path, small_files: int = 400) -> dict[str, dict[str, str]]:
    """Two ready projects, each with a few MiB-sized videos and many small files."""
    work = base / "projets_extraits"
    for n, name in enumerate(PROJECTS):
        files = project_files(f"v{n}", video_size=6 << 20, seed=n)
        files.update(project_files(f"w{n}", video_size=6 << 20, seed=n + 10))
        for i in range(small_files):
            files[f"docs/thumbs/t{i:04d}.jpg"] = bytes([i % 251]) * (2048 + i)
        write_tree(work / name, files)
    return {name: digests(work / name) for name in PROJECTS}


def _env(base: Path) -> dict[str, str]:
    out = base / "cache"
    out.mkdir(exist_ok=True)
    return {"CACHE_ROOT_DIR": str(out), "ARCHIVES_DIR": str(base / "archives")}


def _start(base: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        finalcopy_cmd("run", base / "projets_extraits", "--jobs", "1", *extra),
        env=cli_env(**_env(base)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    proc: subprocess.Popen[str], condition: Callable[[], bool], limit: float = 60
) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    return False


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _journal_phase(base: Path) -> str:
    for path in (base / "projets_extraits" / ".finalcopy" / "journal").glob("*.json"):
        try:
            return str(json.loads(path.read_text())["phase"])
        except (OSError, ValueError, KeyError):
            continue
    return ""


def _assert_all_finalized_once(base: Path, expected: dict[str, dict[str, str]]) -> None:
    cache = base / "cache"
    folders = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert folders == sorted(expected), "no duplicate copies"
    for name, files in expected.items():
        assert digests(cache / name) == files, f"{name}: a byte was lost or changed"
        # (A kill -9 inside Backend.prepare() can leave its randomly named probe file
        # at the destination root; that is the backend's, and holds no data.)
        assert not list((cache / name).rglob(".fc-*.part")), "temporary files left behind"
    leftovers = [p.name for p in (base / "projets_extraits").iterdir() if p.name != ".finalcopy"]
    assert leftovers == [], read_log(base / "logs" / "step7")
    log = read_log(base / "logs" / "step7")
    for name in expected:
        assert log.count(f"Finalisation terminée pour '{name}'") == 1, name


def _conditions(base: Path) -> dict[str, Callable[[], bool]]:
    cache = base / "cache"
    work = base / "projets_extraits"
    return {
        "archiving": lambda: _count_files(base / "archives") > 0,
        "copying": lambda: _count_files(cache / PROJECTS[0] / "docs") >= 20,
        "deleting": lambda: _journal_phase(base) == "deleting",
        "second project": lambda: (
            not (work / PROJECTS[0]).exists() and _count_files(cache / PROJECTS[1]) >= 5
        ),
    }


@pytest.mark.parametrize("point", ["archiving", "copying", "deleting", "second project"])
def test_sigkill_then_rerun_loses_nothing(tmp_path: Path, point: str) -> None:
    _sigkill_then_rerun(tmp_path, point)


@pytest.mark.parametrize("point", ["copying", "deleting"])
def test_sigkill_then_rerun_loses_nothing_on_ext4(ext4_mount: Path, point: str) -> None:
    """On ext4 the small files of a batch are made durable by one syncfs, then renamed."""
    _sigkill_then_rerun(ext4_mount / "base", point)


def _sigkill_then_rerun(base: Path, point: str) -> None:
    expected = _workload(base)
    proc = _start(base)
    reached = _wait_for(proc, _conditions(base)[point])
    proc.kill()
    _out, err = proc.communicate(timeout=30)
    if not reached:
        pytest.fail(f"the run ended before reaching '{point}': {err}")
    # Whatever the instant, the sources that are not fully copied are all still there.
    for name, files in expected.items():
        source = base / "projets_extraits" / name
        at_dest = digests(base / "cache" / name) if (base / "cache" / name).exists() else {}
        left = digests(source) if source.exists() else {}
        for rel, digest in files.items():
            assert left.get(rel) == digest or at_dest.get(rel) == digest, (name, rel)
    again = run_cli("run", base / "projets_extraits", env=_env(base))
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_all_finalized_once(base, expected)


_CRASH_MID_DELETION = """
import os, pathlib, sys
target = sys.argv.pop(1)
original = pathlib.Path.unlink
count = 0
def unlink(self, *args, **kwargs):
    global count
    if str(self).startswith(target + os.sep):
        count += 1
        if count == 50:
            os._exit(137)  # a crash: no cleanup, no finally, no flush
    return original(self, *args, **kwargs)
pathlib.Path.unlink = unlink
from finalcopy.cli.app import main
sys.argv[0] = "finalcopy"
main()
"""


def test_crash_mid_deletion_is_completed_by_the_next_run(tmp_path: Path) -> None:
    expected = _workload(tmp_path)
    source = tmp_path / "projets_extraits" / PROJECTS[0]
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_MID_DELETION, str(source), "run", str(source.parent)],
        env=cli_env(**_env(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert crashed.returncode == 137, crashed.stderr
    remaining = digests(source)
    assert 0 < len(remaining) < len(expected[PROJECTS[0]]), "the crash hit mid-deletion"
    assert _journal_phase(tmp_path) == "deleting"
    # The half-deleted source may no longer look ready; the journal still drives it.
    again = run_cli("run", source.parent, "-v", env=_env(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "completing an interrupted source deletion" in read_log(tmp_path / "logs" / "step7")
    _assert_all_finalized_once(tmp_path, expected)


def test_sigint_stops_cleanly_keeps_the_source_and_rerun_completes(tmp_path: Path) -> None:
    expected = _workload(tmp_path)
    report = tmp_path / "report.json"
    proc = _start(tmp_path, "--report", str(report))
    reached = _wait_for(proc, _conditions(tmp_path)["copying"])
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert reached, err
    assert proc.returncode == 130, err
    assert "SIGINT received" in err
    assert digests(tmp_path / "projets_extraits" / PROJECTS[0]) == expected[PROJECTS[0]]
    assert digests(tmp_path / "projets_extraits" / PROJECTS[1]) == expected[PROJECTS[1]]
    assert not list((tmp_path / "cache").rglob(".fc-*.part"))
    data = json.loads(report.read_text())
    assert data["state"] == "interrupted" and data["exit_code"] == 130
    assert [p["status"] for p in data["projects"]] == ["interrupted", "skipped"]
    status = json.loads((tmp_path / "logs" / "step7" / "step7_status.json").read_text())
    assert status["state"] == "interrupted"
    again = run_cli("run", tmp_path / "projets_extraits", env=_env(tmp_path))
    assert again.returncode == 0, again.stderr
    _assert_all_finalized_once(tmp_path, expected)


def test_two_concurrent_runs_finalize_each_project_once(tmp_path: Path) -> None:
    expected = _workload(tmp_path, small_files=100)
    for n in range(2, 5):
        name = f"projet_{n}"
        write_tree(tmp_path / "projets_extraits" / name, project_files(name, video_size=1 << 20))
        expected[name] = digests(tmp_path / "projets_extraits" / name)
    # rename would leave a second, dated copy if a project were finalized twice.
    first = _start(tmp_path, "--on-existing", "rename")
    second = _start(tmp_path, "--on-existing", "rename")
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0, outputs[0]
    assert second.returncode == 0, outputs[1]
    _assert_all_finalized_once(tmp_path, expected)
    assert len(list((tmp_path / "logs" / "step7").glob("finalize_*.log"))) == 2
