"""Settings precedence: explicit options, then environment variables, then defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finalcopy.errors import UsageError
from finalcopy.finalize import Settings
from finalcopy.finalize.settings import parse_flag
from tests.support.cli import run_cli


def test_defaults_follow_the_original_layout(tmp_path: Path) -> None:
    work = tmp_path / "repo" / "projets_extraits"
    work.mkdir(parents=True)
    s = Settings.resolve(env={}, cwd=work)
    assert s.work_dir == work
    assert s.base_dir == tmp_path / "repo"
    assert s.output == "/mnt/cache"
    assert s.fallback_output is None
    assert s.archives_dir == tmp_path / "repo" / "archives"
    assert s.log_dir == tmp_path / "repo" / "logs" / "step7"
    assert s.last_resort_output == tmp_path / "repo" / "_finalized_output"
    assert s.status_file == s.log_dir / "step7_status.json"
    assert (s.mode, s.on_existing, s.restore_archives, s.debug) == (
        "lenient",
        "merge",
        False,
        False,
    )


def test_environment_is_read(tmp_path: Path) -> None:
    env = {
        "CACHE_ROOT_DIR": "/srv/cache",
        "FALLBACK_OUTPUT_DIR": str(tmp_path / "fb"),
        "ARCHIVES_DIR": str(tmp_path / "arch"),
        "FINALIZE_MODE": "Strict",
        "RESTORE_ARCHIVES_TO_OUTPUT": "True",
        "LOG_DIR": str(tmp_path / "l"),
        "DEBUG": "true",
        "FINALCOPY_BASE_DIR": str(tmp_path / "b"),
        "FINALCOPY_ON_EXISTING": "replace",
    }
    s = Settings.resolve({"work_dir": tmp_path}, env=env)
    assert s.output == "/srv/cache"
    assert s.fallback_output == tmp_path / "fb"
    assert s.archives_dir == tmp_path / "arch"
    assert s.mode == "strict" and s.restore_archives and s.debug
    assert s.log_dir == tmp_path / "l" and s.base_dir == tmp_path / "b"
    assert s.on_existing == "replace"


def test_output_dir_overrides_cache_root_and_options_override_env(tmp_path: Path) -> None:
    env = {"CACHE_ROOT_DIR": "/a", "OUTPUT_DIR": "/b", "FINALIZE_MODE": "videos"}
    assert Settings.resolve({"work_dir": tmp_path}, env=env).output == "/b"
    s = Settings.resolve({"work_dir": tmp_path, "cache_root_dir": "/c", "mode": "strict"}, env=env)
    assert s.output == "/c" and s.mode == "strict"
    s = Settings.resolve({"work_dir": tmp_path, "output_dir": "sftp://u@h/x"}, env=env)
    assert s.output == "sftp://u@h/x" and s.local_output() is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("True", True), ("0", False), ("", False), ("false", False)],
)
def test_flags(text: str, value: bool) -> None:
    assert parse_flag(text, "X") is value


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="RESTORE_ARCHIVES_TO_OUTPUT"):
        Settings.resolve({"work_dir": tmp_path}, env={"RESTORE_ARCHIVES_TO_OUTPUT": "ture"})
    with pytest.raises(UsageError, match="FINALIZE_MODE"):
        Settings.resolve({"work_dir": tmp_path}, env={"FINALIZE_MODE": "all"})
    with pytest.raises(UsageError, match="on-existing"):
        Settings.resolve({"work_dir": tmp_path, "on_existing": "overwrite"}, env={})
    with pytest.raises(UsageError, match="does not exist"):
        Settings.resolve({"work_dir": tmp_path / "missing"}, env={})


def test_cli_option_beats_environment(tmp_path: Path) -> None:
    out = tmp_path / "from_option"
    out.mkdir()
    proc = run_cli(
        "run",
        tmp_path,
        "--dry-run",
        "--json",
        "--cache-root-dir",
        out,
        OUTPUT_DIR=str(tmp_path / "from_env"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["destination"] == str(out)


def test_help_shows_every_environment_variable() -> None:
    proc = run_cli("run", "--help", COLUMNS="200")
    for name in (
        "CACHE_ROOT_DIR",
        "OUTPUT_DIR",
        "FALLBACK_OUTPUT_DIR",
        "ARCHIVES_DIR",
        "FINALIZE_MODE",
        "RESTORE_ARCHIVES_TO_OUTPUT",
        "LOG_DIR",
        "DEBUG",
        "FINALCOPY_BASE_DIR",
    ):
        assert name in proc.stdout, name
