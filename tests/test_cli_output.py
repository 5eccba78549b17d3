"""What goes where: the summary on stdout, last; progress and diagnostics on stderr; logs.

And the counts: the human summary and the JSON summary say the same, whether the
copy finished or was interrupted at a random instant.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cli_env, finalcopy_cmd, run_cli

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (DEBUG|INFO|WARNING|ERROR) - .+$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _tree(root: Path, small: int = 20, large: int = 2) -> Path:
    root.mkdir()
    for i in range(small):
        (root / f"s{i:04d}.txt").write_bytes(os.urandom(100 + i))
    for i in range(large):
        (root / f"big{i}.bin").write_bytes(os.urandom(2 << 20))
    return root


def test_summary_on_stdout_progress_and_files_on_stderr(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    result = run_cli("copy", src, tmp_path / "dst")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("copied 22 file(s)") and out[1].startswith("manifest: ")
    assert len(out) == 2
    err = result.stderr
    assert "22 file(s)" in err  # the plan
    assert "copied big0.bin (2.0 MiB)" in err and "copied big1.bin (2.0 MiB)" in err
    assert "s0001.txt" not in err  # small files only with -v
    assert "s0001.txt" in run_cli("copy", src, tmp_path / "dst2", "-v").stderr


def test_stats_zero_has_no_progress_lines(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", large=4)
    result = run_cli("copy", src, tmp_path / "dst", "--stats", "0")
    assert result.returncode == 0, result.stderr
    assert "%" not in result.stderr
    assert run_cli("copy", src, tmp_path / "d", "--stats", "-1").returncode == 2


def test_quiet_is_silent_on_success(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    result = run_cli("copy", src, tmp_path / "dst", "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    result = run_cli("verify", tmp_path / "dst", "--quiet")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    (tmp_path / "dst" / "s0001.txt").write_bytes(b"changed")
    result = run_cli("verify", tmp_path / "dst", "-q")
    assert result.returncode == 1 and result.stdout == ""
    assert "changed: s0001.txt" in result.stderr


def test_log_file_for_copy_and_verify_in_the_format_of_run(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    log = tmp_path / "copy.log"
    result = run_cli("copy", src, tmp_path / "dst", "--log-file", log)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    assert any(" - INFO - copied s0003.txt" in line for line in lines)
    assert any(" - INFO - copied 22 file(s)" in line for line in lines)
    result = run_cli("verify", tmp_path / "dst", "--log-file", log)
    assert result.returncode == 0, result.stderr
    assert " - INFO - OK: 22 file(s)" in log.read_text()
    bad = run_cli("copy", src, tmp_path / "d", "--log-file", tmp_path / "no" / "such.log")
    assert bad.returncode == 2 and "finalcopy: error: --log-file " in bad.stderr


def test_json_events_carry_a_timestamp_and_the_final_record_is_stable(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    result = run_cli("copy", src, tmp_path / "dst", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(TIME.match(event["time"]) for event in events)
    final = events[-1]
    assert final["kind"] == "summary"
    assert set(final) == {
        "kind", "time", "source", "destination", "algorithm", "verify", "ok", "files",
        "bytes", "copied", "skipped", "bytes_copied", "failed", "warnings", "duration",
        "throughput_bytes_per_s", "interrupted", "dry_run", "manifest", "bwlimit",
    }  # fmt: skip
    result = run_cli("verify", tmp_path / "dst", "--json")
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["kind"] == "summary" and TIME.match(final["time"])
    assert set(final) == {
        "kind", "time", "destination", "algorithm", "ok", "checked", "bytes", "missing",
        "changed", "unexpected", "leftovers", "unlisted", "errors",
    }  # fmt: skip


_HUMAN = re.compile(
    r"copied (?P<copied>\d+) file\(s\) \((?P<size>[^)]*)\), skipped (?P<skipped>\d+) "
    r"already verified, failed (?P<failed>\d+)"
)


def _human_counts(text: str) -> dict[str, int]:
    match = _HUMAN.search(text)
    assert match, text
    return {k: int(v) for k, v in match.groupdict().items() if k != "size"}


def _json_counts(final: dict[str, Any]) -> dict[str, int]:
    return {
        "copied": final["copied"],
        "skipped": final["skipped"],
        "failed": len(final["failed"]),
    }


def test_human_and_json_counts_agree_when_done(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    human = run_cli("copy", src, tmp_path / "a")
    machine = run_cli("copy", src, tmp_path / "b", "--json")
    assert _human_counts(human.stdout) == _json_counts(json.loads(machine.stdout.splitlines()[-1]))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_counts_agree_after_an_interrupt_at_a_random_instant(tmp_path: Path, seed: int) -> None:
    """One run gives both: JSON on stdout, the human summary in --log-file."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"f{i:05d}").write_bytes(b"x" * 2000)
    log = tmp_path / "log"
    process = subprocess.Popen(
        finalcopy_cmd("copy", src, tmp_path / "dst", "--json", "--log-file", log, "-j", "2"),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the plan: the copy has started
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=120)
    final = json.loads((first + rest).splitlines()[-1])
    if process.returncode == 0:
        pytest.skip("the copy finished before the signal")  # a fast machine
    assert process.returncode == 130, err
    assert final["interrupted"] is True
    assert "SIGINT received, stopping cleanly" in err
    human = _human_counts(log.read_text())
    assert human == _json_counts(final)
    # The counts are those of the files reported done one by one, and every one is there
    # (files committed but not yet proven when the signal came are not counted).
    events = [json.loads(line) for line in (first + rest).splitlines()]
    done = [e["path"] for e in events if e["kind"] == "file_done" and e["outcome"] != "skipped"]
    assert human["copied"] == len(done)
    assert all((tmp_path / "dst" / path).is_file() for path in done)


def test_run_prints_its_summary_last_on_stdout_and_each_failure_once(tmp_path: Path) -> None:
    made = run_cli("demo", tmp_path / "demo")
    assert made.returncode == 0, made.stderr
    work = tmp_path / "demo" / "projets_extraits"
    result = run_cli("run", work, "--stats", "0")
    assert result.returncode == 1, result.stderr  # the corrupt demo project
    out = result.stdout.splitlines()
    assert out[0] == "3 projet(s) à finaliser"  # the original's console lines, verbatim
    assert "Finalisation terminée pour 'projet_camille_001'" in out
    assert out[-1].startswith("status:")
    assert any(line.startswith("finalized 2/3 project(s), failed 1") for line in out)
    assert "copied docs/video1.mp4 (1.5 MiB)" in result.stderr  # a large file finished
    assert result.stderr.count("essai_tracking.json': empty or truncated") == 1
    quiet = run_cli("run", tmp_path / "demo" / "projets_extraits", "-q")
    assert quiet.returncode == 1 and quiet.stdout == ""  # errors only, on stderr
    assert "FAILED 'projet_camille_004_corrompu'" in quiet.stderr
    assert "Finalisation" not in quiet.stderr


def test_stats_interval_and_forced_live_display(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", large=3)
    result = run_cli("copy", src, tmp_path / "a", "--stats", "0.001")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if "% " in line]
    assert progress and all(re.search(r"MiB/s|B/s, \d+/23 files", line) for line in progress)
    live = run_cli("copy", src, tmp_path / "b", "-P")
    assert live.returncode == 0, live.stderr
    assert "━" in live.stderr and "23/23 files" in live.stderr  # rich, though stderr is a pipe
    assert live.stdout.startswith("copied 23 file(s)")


def test_a_long_listing_is_a_line_every_interval_and_a_json_event() -> None:
    """Without a terminal, the walk of a huge source shows as ``--stats`` lines; in JSON
    as ``listing`` events (docs/json.md); ``-q`` says nothing."""
    import io

    from finalcopy.cli.render.engine import JsonRenderer, PlainRenderer, QuietRenderer
    from finalcopy.engine.events import Listing

    now = [0.0]
    err, out = io.StringIO(), io.StringIO()
    plain = PlainRenderer(out=out, err=err, clock=lambda: now[0], interval=10.0)
    for second, files in ((5, 1_000), (11, 2_500), (15, 3_000), (22, 12_345)):
        now[0] = second
        plain(Listing(files=files, bytes=files * 1024))
    assert err.getvalue().splitlines() == [
        "listing the source: 2,500 file(s), 2.4 MiB so far",
        "listing the source: 12,345 file(s), 12.1 MiB so far",
    ]
    assert out.getvalue() == ""
    json_out = io.StringIO()
    JsonRenderer(json_out)(Listing(files=7, bytes=70))
    line = json.loads(json_out.getvalue())
    assert (line["kind"], line["files"], line["bytes"]) == ("listing", 7, 70)
    assert TIME.match(line["time"])
    quiet_err = io.StringIO()
    QuietRenderer(err=quiet_err)(Listing(files=7, bytes=70))
    assert quiet_err.getvalue() == ""


def test_a_long_listing_shows_on_the_live_display() -> None:
    import io

    from rich.console import Console

    from finalcopy.cli.render.live import RichRenderer
    from finalcopy.engine.events import Listing

    live = RichRenderer(console=Console(file=io.StringIO(), force_terminal=True, width=120))
    live(Listing(files=12_345, bytes=3 << 30))
    (task,) = live.progress.tasks
    assert task.fields["files"] == "listing: 12,345 file(s), 3.0 GiB"
