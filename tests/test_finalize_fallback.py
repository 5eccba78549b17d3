"""The fallback is visible, and can be forbidden (issue 8, item 7).

``OUTPUT_DIR=/mnt/nas_typo finalcopy run`` used to finalize into
``BASE/_finalized_output``, delete the sources and exit 0 with only a
"passed over" line. Taking a fallback must now be a WARNING in the log and
on the console naming the intended output, the reason and the folder used,
and be recorded in the report and the status file; ``--no-fallback`` (or
``FINALIZE_NO_FALLBACK``) turns an unusable output into exit 3 with nothing
touched.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finalcopy.finalize import Settings, finalize_sync
from tests.support.cli import run_cli
from tests.support.pipeline import project_files, read_log
from tests.support.trees import make_tree as write_tree
from tests.support.trees import snapshot

WARNING_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - WARNING - (.*)$", re.MULTILINE)


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/repo/projets_extraits/p`` (a ready project); returns (base, work)."""
    base = tmp_path / "repo"
    work = base / "projets_extraits"
    write_tree(work / "p", project_files())
    return base, work


def _fallback_warnings(lines: list[str], intended: Path, used: Path, reason: str) -> list[str]:
    """The lines naming all three facts."""
    return [
        line
        for line in lines
        if str(intended) in line and str(used) in line and reason in line and "WARNING" in line
    ]


def _status(log_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((log_dir / "step7_status.json").read_text())
    return data


@pytest.mark.parametrize("with_fallback_dir", [False, True], ids=["finalized_output", "FALLBACK"])
def test_missing_output_falls_back_loudly(tmp_path: Path, with_fallback_dir: bool) -> None:
    base, work = _layout(tmp_path)
    missing = tmp_path / "nas_typo"
    extra: dict[str, str] = {"OUTPUT_DIR": str(missing), "FINALIZE_NO_FALLBACK": ""}
    used = base / "_finalized_output"
    if with_fallback_dir:
        used = tmp_path / "fallback"
        used.mkdir()
        extra["FALLBACK_OUTPUT_DIR"] = str(used)
    report_path = tmp_path / "report.json"
    proc = run_cli("run", work, "--report", report_path, env=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (used / "p" / "docs" / "v.mp4").is_file()
    assert not missing.exists(), "a missing output is never created"

    reason = "does not exist"
    log_dir = base / "logs" / "step7"
    logged = WARNING_LINE.findall(read_log(log_dir))
    assert _fallback_warnings([f"WARNING {m}" for m in logged], missing, used, reason), logged
    console = (proc.stderr + proc.stdout).splitlines()
    assert _fallback_warnings(console, missing, used, reason), proc.stdout + proc.stderr

    expected = {
        "used": True,
        "intended": str(missing),
        "used_destination": str(used),
    }
    for data in (json.loads(report_path.read_text()), _status(log_dir)):
        fallback = data["fallback"]
        assert {k: fallback[k] for k in expected} == expected
        assert reason in fallback["reason"] and str(missing) in fallback["reason"]


def test_fallback_warning_and_record_through_the_python_api(tmp_path: Path) -> None:
    base, work = _layout(tmp_path)
    missing = tmp_path / "nas_typo"
    settings = Settings.resolve(
        {"work_dir": work, "output_dir": str(missing), "log_dir": tmp_path / "logs"}, env={}
    )
    report = finalize_sync(settings)
    assert report.exit_code == 0
    used = base / "_finalized_output"
    data = report.to_dict()["fallback"]
    assert data["used"] is True and data["used_destination"] == str(used)
    assert data["intended"] == str(missing) and "does not exist" in data["reason"]
    assert _status(tmp_path / "logs")["fallback"] == data


def test_json_output_still_warns_on_stderr_and_emits_a_notice(tmp_path: Path) -> None:
    base, work = _layout(tmp_path)
    missing = tmp_path / "nas_typo"
    proc = run_cli("run", work, "--json", OUTPUT_DIR=str(missing), FINALIZE_NO_FALLBACK="")
    assert proc.returncode == 0, proc.stderr
    used = base / "_finalized_output"
    assert _fallback_warnings(proc.stderr.splitlines(), missing, used, "does not exist")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    notices = [e for e in events if e["kind"] == "notice" and e.get("level") == "warning"]
    assert any(str(missing) in e["message"] and str(used) in e["message"] for e in notices)
    assert events[-1]["kind"] == "finalize_report" and events[-1]["fallback"]["used"] is True


def _assert_nothing_touched(tmp_path: Path, base: Path, before: dict[str, Any]) -> None:
    work = base / "projets_extraits"
    assert snapshot(work) == before, "sources untouched"
    assert not (base / "_finalized_output").exists()
    assert not (base / "archives").exists()
    assert not (tmp_path / "nas_typo").exists()


@pytest.mark.parametrize(
    "how",
    ["option", "env-1", "env-true", "env-yes", "env-on", "env-TRUE"],
)
def test_no_fallback_makes_an_unusable_output_exit_3(tmp_path: Path, how: str) -> None:
    base, work = _layout(tmp_path)
    before = snapshot(work)
    missing = tmp_path / "nas_typo"
    report_path = tmp_path / "report.json"
    args: list[str | Path] = ["run", work, "--report", report_path]
    extra = {"OUTPUT_DIR": str(missing), "FINALIZE_NO_FALLBACK": ""}
    if how == "option":
        args.append("--no-fallback")
    else:
        extra["FINALIZE_NO_FALLBACK"] = how.removeprefix("env-")
    proc = run_cli(*args, env=extra)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    _assert_nothing_touched(tmp_path, base, before)
    log = read_log(base / "logs" / "step7")
    assert " - CRITICAL - No usable destination" in log
    assert str(missing) in log and "does not exist" in log
    assert "--no-fallback" in log
    data = json.loads(report_path.read_text())
    assert data["exit_code"] == 3 and data["fallback"] == {"used": False}
    assert _status(base / "logs" / "step7")["fallback"] == {"used": False}
    assert str(missing) in proc.stdout + proc.stderr


def test_no_fallback_ignores_an_existing_fallback_output_dir(tmp_path: Path) -> None:
    base, work = _layout(tmp_path)
    before = snapshot(work)
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    proc = run_cli(
        "run",
        work,
        "--no-fallback",
        OUTPUT_DIR=str(tmp_path / "nas_typo"),
        FALLBACK_OUTPUT_DIR=str(fallback),
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    _assert_nothing_touched(tmp_path, base, before)
    assert list(fallback.iterdir()) == []


def test_no_fallback_through_the_python_api(tmp_path: Path) -> None:
    base, work = _layout(tmp_path)
    before = snapshot(work)
    settings = Settings.resolve(
        {"work_dir": work, "output_dir": str(tmp_path / "nas_typo")},
        env={"FINALIZE_NO_FALLBACK": "1"},
    )
    assert settings.no_fallback
    report = finalize_sync(settings)
    assert report.exit_code == 3
    assert report.to_dict()["fallback"] == {"used": False}
    _assert_nothing_touched(tmp_path, base, before)


def test_fallback_option_overrides_the_environment(tmp_path: Path) -> None:
    s = Settings.resolve(
        {"work_dir": tmp_path, "no_fallback": False}, env={"FINALIZE_NO_FALLBACK": "1"}
    )
    assert not s.no_fallback
    assert not Settings.resolve({"work_dir": tmp_path}, env={}).no_fallback


def test_bad_no_fallback_value_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("run", tmp_path, FINALIZE_NO_FALLBACK="maybe")
    assert proc.returncode == 2
    assert "FINALIZE_NO_FALLBACK" in proc.stderr


def test_no_fallback_with_a_usable_output_finalizes(tmp_path: Path) -> None:
    _base, work = _layout(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("run", work, "--no-fallback", OUTPUT_DIR=str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "p" / "docs" / "v.mp4").is_file()


def test_usable_output_records_no_fallback(tmp_path: Path) -> None:
    base, work = _layout(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    report_path = tmp_path / "report.json"
    proc = run_cli("run", work, "--report", report_path, OUTPUT_DIR=str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(report_path.read_text())["fallback"] == {"used": False}
    assert _status(base / "logs" / "step7")["fallback"] == {"used": False}
    assert " - WARNING - " not in read_log(base / "logs" / "step7")
    assert "WARNING" not in proc.stdout + proc.stderr
    assert not (base / "_finalized_output").exists()


def test_help_documents_no_fallback() -> None:
    proc = run_cli("run", "--help", COLUMNS="200")
    assert proc.returncode == 0
    assert "--no-fallback" in proc.stdout and "FINALIZE_NO_FALLBACK" in proc.stdout
