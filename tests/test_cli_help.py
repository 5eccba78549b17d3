"""Help, parse errors and typos: rsync/rclone habits, one error style, nothing guessed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from finalcopy.errors import UsageError
from finalcopy.finalize import Settings
from tests.support.cli import run_cli

PANELS = ("What to copy", "Verification", "Destination and SSH", "Output", "Performance")


@pytest.mark.parametrize("command", ["copy", "verify", "run"])
def test_dash_h_is_help_with_options_in_panels(command: str) -> None:
    result = run_cli(command, "-h")
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli(command, "--help").stdout
    panels = PANELS if command != "verify" else ("Destination and SSH", "Output", "Performance")
    places = [result.stdout.find(f"─ {panel} ") for panel in panels]
    assert -1 not in places and places == sorted(places), panels  # all, in this order
    for option in ("--quiet", "-q", "--progress", "-P", "--stats", "--json", "--verbose"):
        assert option in result.stdout


@pytest.mark.parametrize("command", ["copy", "run"])
def test_choices_defaults_and_env_vars_are_listed(command: str) -> None:
    text = run_cli(command, "--help").stdout
    assert "blake3|sha256|xxh128" in text and "readback|size|none" in text
    assert "auto|posix|none" in text and "reject|map" in text
    assert "[default: blake3]" in text and "[default: 64K]" in text
    assert "NETWORK_RETRY_ATTEMPTS" in text and "NETWORK_TIMEOUT" in text
    assert "--checksum" in text


def test_run_lists_its_environment_and_choices() -> None:
    text = run_cli("run", "--help").stdout
    assert "strict|lenient|videos" in text and "merge|replace|rename" in text
    for name in ("OUTPUT_DIR", "CACHE_ROOT_DIR", "FALLBACK_OUTPUT_DIR", "ARCHIVES_DIR"):
        assert name in text, name
    for name in ("FINALIZE_MODE", "RESTORE_ARCHIVES_TO_OUTPUT", "LOG_DIR", "DEBUG"):
        assert name in text, name


def test_shell_completion_is_available() -> None:
    assert "--install-completion" in run_cli("--help").stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--chunk-size", "abc"], "--chunk-size 'abc'"),
        (["--chunk-size", "1"], "--chunk-size '1'"),
        (["--chunk-size", "64M"], "--chunk-size '64M'"),
        (["-j", "abc"], "-j 'abc'"),
        (["--jobs", "0"], "--jobs"),
        (["--hash", "md5"], "--hash 'md5'"),
        (["--verify", "maybe"], "--verify 'maybe'"),
        (["--metadata", "some"], "--metadata 'some'"),
        (["--timeout", "soon"], "--timeout 'soon'"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_parse_errors_in_one_style_exit_2(tmp_path: Path, args: list[str], named: str) -> None:
    result = run_cli("copy", tmp_path, tmp_path / "dst", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("finalcopy: error: "), result.stderr
    assert named in result.stderr
    assert "╭" not in result.stderr  # never typer's box
    assert not (tmp_path / "dst").exists()


def test_an_environment_value_is_named_with_its_variable(tmp_path: Path) -> None:
    result = run_cli("run", tmp_path, "--dry-run", FINALIZE_MODE="all")
    assert result.returncode == 2
    assert "finalcopy: error: --mode (from FINALIZE_MODE) 'all'" in result.stderr


@pytest.mark.parametrize(
    "dest", ["sftp//host/x", "sftp:/host/x", "user@:path", "sftp:///x", "@host:x", ":x"]
)
def test_a_mistyped_remote_is_refused_never_a_local_folder(tmp_path: Path, dest: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    result = run_cli("copy", src, dest, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"finalcopy: error: destination '{dest}': ")
    assert "sftp://" in result.stderr and f"./{dest}" in result.stderr  # the hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert run_cli("verify", dest, cwd=tmp_path).returncode == 2


def test_an_explicit_local_path_is_taken_as_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    result = run_cli("copy", src, "./sftp:/x", "--stats", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sftp:" / "x" / "a").read_text() == "a"


def test_run_refuses_a_mistyped_output_dir(tmp_path: Path) -> None:
    result = run_cli("run", tmp_path, "--output-dir", "sftp:/nas/x", "--dry-run")
    assert result.returncode == 2
    assert "finalcopy: error: --output-dir 'sftp:/nas/x': looks like a mistyped" in result.stderr


def test_a_destination_that_is_a_file_says_so(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    (tmp_path / "dst").write_text("i am a file")
    result = run_cli("copy", src, tmp_path / "dst")
    assert result.returncode == 3, result.stderr
    assert f"destination '{tmp_path / 'dst'}': exists and is a file" in result.stderr


def test_settings_reject_unknown_keys_listing_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Settings.resolve({"work_dir": tmp_path, "outptu_dir": "/x"}, env={})
    message = str(caught.value)
    assert "'outptu_dir'" in message and "output_dir" in message and "cache_root_dir" in message


def test_no_such_host_is_not_retried(tmp_path: Path) -> None:
    try:
        socket.getaddrinfo("finalcopy-test.invalid", 22)
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            pytest.skip(f"this resolver answers {exc} for .invalid names")
    else:
        pytest.skip("this resolver resolves .invalid names")
    (tmp_path / "src").mkdir()
    result = run_cli("copy", tmp_path / "src", "sftp://finalcopy-test.invalid/x", "--retries", "5")
    assert result.returncode == 3, result.stderr
    assert "cannot connect to" in result.stderr
    assert "retrying" not in result.stderr and "attempts" not in result.stderr
