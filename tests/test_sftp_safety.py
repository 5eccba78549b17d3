"""SFTP destinations as untrusted ground (issue 9), against a real OpenSSH sshd.

Whoever can write into the destination may plant symbolic links, hostile
names or stale files there; finalcopy must still never write, truncate or
delete anything outside the destination, never report a wrong copy as
verified, never print a password, honour ``@revoked``/``@cert-authority``
as OpenSSH does, and never wait for a slow login shell.

The server runs on this machine, so "outside the destination" is a local
folder the tests look at directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from finalcopy.backends.base import FileTransfer, is_temp_name, temp_name
from finalcopy.backends.registry import parse_destination
from finalcopy.backends.sftp.backend import SftpBackend
from finalcopy.engine import CopyOptions, copy_tree, verify_tree
from finalcopy.engine.plan import META_DIR
from finalcopy.engine.source import FileChunkSource
from finalcopy.engine.state import STATE_NAME
from finalcopy.errors import DestinationError, FinalcopyError, HostKeyError, UsageError
from finalcopy.hashing import get_algorithm
from tests.support.cli import run_cli
from tests.support.fixtures import require_part, require_tool
from tests.support.pipeline import project_files
from tests.support.sftp import cli_identity, open_remote
from tests.support.sshd import SshServer, running_sshd, sshd_available
from tests.support.trees import make_tree, tree_content

MiB = 1024 * 1024
BLAKE3 = get_algorithm("blake3")
VICTIM = b"precious content outside the destination\n"


# -- helpers -------------------------------------------------------------------------------


def plant_victims(outside: Path, names: list[str]) -> dict[str, Path]:
    """One file per name outside the destination, each holding :data:`VICTIM`."""
    outside.mkdir(parents=True, exist_ok=True)
    victims: dict[str, Path] = {}
    for name in names:
        victim = outside / f"victim-{len(victims)}"
        victim.write_bytes(VICTIM)
        victims[name] = victim
    return victims


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


def untouched(folder: Path, expected: dict[str, bytes]) -> bool:
    return tree_content(folder, skip=()) == expected and all(
        not p.is_symlink() for p in folder.rglob("*")
    )


# -- 1. planted symlinks at temporary names ------------------------------------------------


@pytest.mark.anyio
async def test_planted_symlinks_at_temporary_names_are_never_followed(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """A link at ``.fc-<hash>.part`` (file, resumed file, state, symlink) is never written."""
    src = tmp_path / "src"
    big = os.urandom(2 * MiB + 17)
    files = {"small.txt": b"small", "other.txt": b"other", "big.bin": big}
    make_tree(src, files)
    (src / "link").symlink_to("small.txt")
    remote = tmp_path / "remote"
    (remote / META_DIR).mkdir(parents=True)
    outside = tmp_path / "outside"
    victims = plant_victims(outside, ["small.txt", "other.txt", "big.bin", "link", STATE_NAME])
    # The big file's victim starts with the source's own bytes: a resume through the link
    # would find a matching prefix and write the rest into the victim.
    victims["big.bin"].write_bytes(big[: MiB + MiB // 2])
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    for name, victim in victims.items():
        folder = remote / META_DIR if name == STATE_NAME else remote
        (folder / temp_name(name)).symlink_to(victim)

    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        report = await copy_tree(src, backend, CopyOptions())
        assert report.ok, report.failed
        assert (await verify_tree(backend)).ok

    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert tree_content(remote) == files
    assert os.readlink(remote / "link") == "small.txt"
    # Links are created under unpredictable temporary names: the one planted at the
    # deterministic name is not ours, stays as it was, and is never followed.
    assert temp_leftovers(remote) == [remote / temp_name("link")]
    assert (remote / temp_name("link")).is_symlink()


@pytest.mark.anyio
async def test_folder_at_a_temporary_name_is_a_clear_error(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    blocker = remote / temp_name("x.bin")
    blocker.mkdir(parents=True)
    (blocker / "inside").write_bytes(VICTIM)
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        with pytest.raises(DestinationError, match="in the way") as info:
            await backend.open_temp("x.bin")
        with pytest.raises(DestinationError, match="in the way"):
            await backend.write_bytes("x.bin", b"data")
    assert "x.bin" in str(info.value)
    assert (blocker / "inside").read_bytes() == VICTIM
    assert not (remote / "x.bin").exists()


@pytest.mark.anyio
async def test_resume_never_continues_through_a_link(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """A link at a large file's temporary name is never resumed: it goes, a fresh file is made.

    The victim holds the source's own first bytes, so continuing through the
    link would find a matching prefix and write the rest into the victim.
    """
    remote = tmp_path / "remote"
    remote.mkdir()
    data = os.urandom(2 * MiB)
    source = make_tree(tmp_path / "src", {"v.bin": data}) / "v.bin"
    (victim,) = plant_victims(tmp_path / "outside", ["v.bin"]).values()
    victim.write_bytes(data[:MiB])
    (remote / temp_name("v.bin")).symlink_to(victim)
    chunks = FileChunkSource(source, len(data), BLAKE3, 64 * 1024, threading.Event())
    transfer = FileTransfer("v.bin", chunks, mode=0o644, mtime_ns=None)
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        await backend.put_files([transfer], BLAKE3)
    chunks.close()
    assert transfer.error is None and transfer.resumed_from == 0
    assert victim.read_bytes() == data[:MiB]
    assert (remote / "v.bin").read_bytes() == data and not (remote / "v.bin").is_symlink()


# -- 2. folder symlinks inside the destination ---------------------------------------------


@pytest.mark.anyio
async def test_folder_symlinks_inside_dest_are_never_traversed(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "keep.txt").write_bytes(VICTIM)
    (elsewhere / "sub").mkdir()
    (remote / "docs").symlink_to(elsewhere)
    (remote / "top.txt").write_bytes(b"top")
    expected = {"keep.txt": VICTIM}

    def is_link_error(info: pytest.ExceptionInfo[DestinationError]) -> bool:
        message = str(info.value)
        return "docs" in message and "symbolic link" in message

    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        for operation in (
            lambda: backend.makedirs(["docs"]),  # an existing link is not a folder
            lambda: backend.makedirs(["docs/new"]),
            lambda: backend.open_temp("docs/x"),
            lambda: backend.write_bytes("docs/x", b"x"),
            lambda: backend.symlink("docs/l", "target"),
            lambda: backend.remove("docs/keep.txt"),
            lambda: backend.remove("docs/sub"),
            lambda: backend.rename("top.txt", "docs/top.txt"),
            lambda: backend.rename("docs/keep.txt", "stolen.txt"),
            lambda: backend.set_metadata("docs", mode=0o777, mtime_ns=0),
            lambda: backend.set_metadata("docs/sub", mode=0o777, mtime_ns=0),
        ):
            with pytest.raises(DestinationError) as info:
                await operation()
            assert is_link_error(info), info.value
        walked = dict(await backend.walk(""))
        assert walked["docs"].kind == "symlink"
        assert not any(path.startswith("docs/") for path in walked)
        assert await backend.walk("docs") == []
        assert await backend.stat(["docs/keep.txt"]) == [None]
        await backend.remove("docs")  # the link only
    assert untouched(elsewhere, expected) and (elsewhere / "sub").is_dir()
    assert oct((elsewhere).stat().st_mode & 0o777) == oct(0o755)
    assert not (remote / "docs").exists() and (remote / "top.txt").read_bytes() == b"top"


@pytest.mark.anyio
async def test_copy_into_a_planted_folder_link_fails_that_path_and_writes_nothing_outside(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"docs/x.txt": b"x", "docs/sub/y.txt": b"y", "a.txt": b"a"})
    remote = tmp_path / "remote"
    remote.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_bytes(VICTIM)
    (remote / "docs").symlink_to(elsewhere)
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        try:
            report = await copy_tree(src, backend, CopyOptions())
        except DestinationError as exc:
            message = str(exc)
        else:
            assert not report.ok
            message = report.failed.get("docs/x.txt", "") or str(report.failed)
    assert "docs" in message and "symbolic link" in message, message
    assert untouched(elsewhere, {"keep.txt": VICTIM})


@pytest.mark.anyio
async def test_metadata_folder_as_a_link_is_never_written_through(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"a", "b.txt": b"b"})
    remote = tmp_path / "remote"
    remote.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (remote / META_DIR).symlink_to(elsewhere)
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        with pytest.raises(DestinationError, match="symbolic link"):
            await backend.write_bytes(f"{META_DIR}/{STATE_NAME}", b"forged")
        with pytest.raises(FinalcopyError, match="symbolic link"):
            await copy_tree(src, backend, CopyOptions())
    assert list(elsewhere.iterdir()) == []
    assert (remote / META_DIR).is_symlink()


# -- 6. the remote hashing shell -----------------------------------------------------------


@pytest.mark.anyio
async def test_hostile_names_cannot_desynchronise_the_hashing_shell(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    """Names holding line breaks, forged digests and end markers: every copy verifies."""
    require_tool("xxh128sum")
    forged = "0" * 32
    files = {f"plain{i}.txt": f"plain {i}\n".encode() * (i + 1) for i in range(12)}
    for n in range(1, 9):  # the old shell counted its end markers from 1
        files[f"a{n}\n@finalcopy-{n}@\n{forged}  forged{n}"] = f"hostile {n}".encode()
    files["cr\r\nname"] = b"carriage return"
    files["back\\slash\\n"] = b"backslash"
    files["tab\tand  spaces"] = b"tab"
    make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        assert isinstance(backend, SftpBackend)
        assert "xxh128" in backend.link.tools.known, backend.strategy
        report = await copy_tree(tmp_path / "src", backend, CopyOptions(algorithm="xxh128"))
        assert report.ok, report.failed
        assert report.copied == len(files)
        verified = await verify_tree(backend)
        assert verified.ok and verified.checked == len(files), verified.to_dict()
    assert tree_content(remote) == files


@pytest.mark.anyio
async def test_surplus_lines_from_the_server_are_never_taken_for_digests(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hash command that prints a forged line before its own: nothing is judged on it."""
    import finalcopy.backends.sftp.shell as sftp_shell

    forged = "0" * 64
    chatty = f'sh -c \'echo "{forged}  -"; b3sum "$@"\' b3sum'
    monkeypatch.setattr(sftp_shell, "detected_tools", lambda lines: {"blake3": chatty})
    files = {f"f{i}.txt": f"content {i}\n".encode() for i in range(6)}
    files["big.bin"] = os.urandom(2 * MiB)
    make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        report = await copy_tree(tmp_path / "src", backend, CopyOptions())
        assert report.ok, report.failed
        verified = await verify_tree(backend)
        assert verified.ok and verified.checked == len(files), verified.to_dict()
    assert tree_content(remote) == files


# -- 7. secrets ----------------------------------------------------------------------------


PASSWORD = "s3cretpw"


def test_password_in_a_url_is_refused_without_repeating_it() -> None:
    for dest in (
        f"sftp://user:{PASSWORD}@example.org/x",
        f"sftp://user:{PASSWORD}@example.org:bad/x",
        f"sftp://:{PASSWORD}@/x",
        f"user:{PASSWORD}@example.org:/x",
    ):
        with pytest.raises(UsageError) as info:
            parse_destination(dest)
        message = str(info.value)
        assert PASSWORD not in message
        assert "--identity" in message and "agent" in message


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_password_never_reaches_any_output(sshd_server: SshServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"a.txt": b"a"})
    dest = f"sftp://{sshd_server.user}:{PASSWORD}@{sshd_server.host}:{sshd_server.port}{tmp_path}/x"
    env = {"HOME": str(tmp_path / "home"), "SSH_AUTH_SOCK": ""}
    flags = cli_identity(sshd_server)
    for extra in ([], ["--json"], ["-vv"]):
        result = run_cli("copy", tmp_path / "src", dest, *flags, *extra, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert "--identity" in result.stdout + result.stderr
    assert not (tmp_path / "x").exists()

    work = tmp_path / "base" / "projets_extraits"
    make_tree(work / "projet_a", project_files("video1"))
    result = run_cli("run", work, OUTPUT_DIR=dest, HOME=str(tmp_path / "home"))
    assert PASSWORD not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode != 0
    assert _files_holding(tmp_path / "base", PASSWORD.encode()) == []
    assert not (tmp_path / "x").exists()


# -- 8. known_hosts as OpenSSH reads it ----------------------------------------------------


def _host_key_fields(server: SshServer) -> str:
    return " ".join(server.known_hosts.read_text().split()[1:3])


@pytest.mark.anyio
@pytest.mark.parametrize("accept_new", [False, True])
async def test_revoked_host_key_is_refused_and_never_recorded(
    sshd_server: SshServer, tmp_path: Path, accept_new: bool
) -> None:
    known_hosts = tmp_path / "known_hosts"
    revoked = f"@revoked [{sshd_server.host}]:{sshd_server.port} {_host_key_fields(sshd_server)}\n"
    for content in (revoked, revoked + sshd_server.known_hosts.read_text()):
        known_hosts.write_text(content)
        with pytest.raises(HostKeyError, match="@revoked"):
            await open_remote(
                sshd_server, tmp_path, tmp_path / "remote", known_hosts=known_hosts,
                accept_new_host_key=accept_new,
            )  # fmt: skip
        assert known_hosts.read_text() == content
    assert not (tmp_path / "remote").exists()


@pytest.fixture
def certified_sshd(tmp_path: Path) -> Iterator[tuple[SshServer, Path]]:
    """A private sshd whose host key a fresh CA certified; yields it and the CA's public key."""
    require_part(sshd_available())
    ca = tmp_path / "host_ca"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fc-test-ca", "-f", str(ca)],
        check=True,
        capture_output=True,
    )
    with running_sshd(tmp_path / "sshd-ca", host_ca=ca) as server:
        yield server, ca.with_name(ca.name + ".pub")


@pytest.mark.anyio
async def test_cert_authority_lines_are_honoured(
    certified_sshd: tuple[SshServer, Path], tmp_path: Path
) -> None:
    server, ca_pub = certified_sshd
    ca = " ".join(ca_pub.read_text().split()[:2])
    pattern = f"[{server.host}]:{server.port}"
    known_hosts = tmp_path / "known_hosts_ca"
    known_hosts.write_text(f"@cert-authority {pattern} {ca}\n")
    async with await open_remote(server, tmp_path, tmp_path / "remote", known_hosts=known_hosts):
        pass
    # A revoked CA is refused even with --accept-new-host-key, and nothing is recorded.
    content = f"@cert-authority {pattern} {ca}\n@revoked {pattern} {ca}\n"
    known_hosts.write_text(content)
    with pytest.raises(HostKeyError):
        await open_remote(
            server, tmp_path, tmp_path / "remote", known_hosts=known_hosts, accept_new_host_key=True
        )
    assert known_hosts.read_text() == content


# -- 10. a slow login shell ----------------------------------------------------------------


SLOW_SECONDS = 30


@contextlib.contextmanager
def _sshd_with_bashrc(tmp_path: Path, bashrc: str) -> Iterator[SshServer]:
    """A private sshd whose login shell (bash) reads ``bashrc`` before any command.

    bash reads ``~/.bashrc`` when sshd starts it, as for ``ssh host command``;
    ``SetEnv HOME`` points it at a test home. The SFTP subsystem is spared, so
    that only shell commands (the hash-tool probe, hashing) are affected.
    """
    require_part(sshd_available())
    if os.path.basename(pwd.getpwuid(os.geteuid()).pw_shell) != "bash":
        pytest.skip("the login shell is not bash")
    home = tmp_path / "rc-home"
    home.mkdir()
    (home / ".bashrc").write_text(
        f'case "$BASH_EXECUTION_STRING" in\n  *sftp-server*) ;;\n  *) {bashrc} ;;\nesac\n'
    )
    with running_sshd(tmp_path / "sshd-rc", extra_config=[f"SetEnv HOME={home}"]) as server:
        yield server


@pytest.fixture
def slow_shell_sshd(tmp_path: Path) -> Iterator[SshServer]:
    with _sshd_with_bashrc(tmp_path, f"sleep {SLOW_SECONDS}") as server:
        yield server


@pytest.fixture
def chatty_shell_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """Its rc file prints a welcome and a line that looks like a digest."""
    with _sshd_with_bashrc(tmp_path, f"echo Welcome; echo '{'0' * 64}  -'") as server:
        yield server


@pytest.mark.anyio
async def test_slow_login_shell_does_not_delay_the_copy(
    slow_shell_sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = {f"d/f{i}.txt": os.urandom(1000 + i) for i in range(10)}
    files["big.bin"] = os.urandom(2 * MiB)
    make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    caplog.set_level(logging.WARNING, logger="finalcopy.sftp")
    started = time.monotonic()
    with anyio.fail_after(SLOW_SECONDS * 3):
        async with await open_remote(
            slow_shell_sshd, tmp_path, remote, timeout=SLOW_SECONDS * 2
        ) as backend:
            report = await copy_tree(tmp_path / "src", backend, CopyOptions())
    elapsed = time.monotonic() - started
    assert report.ok, report.failed
    assert tree_content(remote) == files
    assert elapsed < 20, f"the copy waited {elapsed:.1f} s for the login shell"
    notices = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(notices) == 1, [r.getMessage() for r in caplog.records]


@pytest.mark.anyio
async def test_what_login_scripts_print_is_never_taken_for_a_reply(
    chatty_shell_sshd: SshServer, tmp_path: Path
) -> None:
    files = {f"f{i}.txt": os.urandom(100 + i) for i in range(20)}
    files["big.bin"] = os.urandom(2 * MiB)
    make_tree(tmp_path / "src", files)
    remote = tmp_path / "remote"
    async with await open_remote(chatty_shell_sshd, tmp_path, remote) as backend:
        assert "hashing on the server" in backend.strategy, backend.strategy
        report = await copy_tree(tmp_path / "src", backend, CopyOptions(jobs=8))
        assert report.ok, report.failed
        verified = await verify_tree(backend)
        assert verified.ok and verified.checked == len(files), verified.to_dict()
    assert tree_content(remote) == files
