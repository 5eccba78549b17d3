"""The SFTP backend against a real OpenSSH sshd: copies, verification, host keys, faults.

The server runs on this machine, so the remote folder is also a local path:
tests look at it directly (and run ``b3sum -c`` there, as an operator would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import anyio
import anyio.to_thread
import asyncssh
import blake3
import pytest

from finalcopy.backends import DestinationOptions, FileTransfer, open_backend
from finalcopy.backends.base import is_temp_name, temp_name
from finalcopy.backends.sftp.backend import SftpBackend
from finalcopy.backends.sftp.connection import Session
from finalcopy.backends.sftp.shell import ShellPool, parse_silence
from finalcopy.backends.sftp.transport import MSG_IGNORE, skip_ignore_packets
from finalcopy.engine import CopyOptions, copy_tree, verify_tree
from finalcopy.engine.events import Event, FileFinished, Retry
from finalcopy.engine.source import FileChunkSource
from finalcopy.errors import (
    DestinationUnusable,
    HostKeyError,
    NoSpaceError,
    PermissionDeniedError,
)
from finalcopy.hashing import get_algorithm
from tests.support.cli import run_cli
from tests.support.sftp import cli_identity, open_remote, options, url
from tests.support.sshd import SshServer
from tests.support.trees import make_tree, tree_content
from tests.support.users import LocalUser

MiB = 1024 * 1024
BLAKE3 = get_algorithm("blake3")


# -- helpers ---------------------------------------------------------------------------


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


def sample_tree(root: Path) -> dict[str, bytes]:
    files = {f"projet/docs/clip{i}.mp4": os.urandom(i * 50_000 + 1) for i in range(6)}
    files |= {f"projet/logs/run{i}.log": f"line {i}\n".encode() * i for i in range(20)}
    files["projet/docs/big.mov"] = os.urandom(3 * MiB + 12345)
    files["empty"] = b""
    make_tree(root, files)
    return files


def ssh_home(tmp_path: Path, server: SshServer) -> dict[str, str]:
    """Environment for the CLI: a HOME whose ~/.ssh/config is the fixture's, and no agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy(server.ssh_config, home / ".ssh" / "config")
    return {"HOME": str(home), "SSH_AUTH_SOCK": ""}


# -- copying and verifying ---------------------------------------------------------------


@pytest.mark.anyio
async def test_copy_is_checkable_with_b3sum_on_the_server(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    files = sample_tree(tmp_path / "src")
    remote = tmp_path / "remote"
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        assert "hashing on the server" in backend.strategy, backend.strategy
        assert isinstance(backend, SftpBackend)
        assert "blake3" in backend.link.tools.known
        report = await copy_tree(tmp_path / "src", backend, CopyOptions(), dest="dst")
    assert report.ok, report.failed
    assert report.copied == len(files)
    assert tree_content(remote / "dst") == files
    assert leftovers(remote) == []
    check = await anyio.run_process(
        ["b3sum", "-c", ".finalcopy/manifest.blake3"], cwd=remote / "dst", check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.decode().count(": OK") == len(files)


@pytest.mark.anyio
async def test_rerun_skips_everything_and_remote_verify_catches_corruption(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    files = sample_tree(tmp_path / "src")
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        first = await copy_tree(tmp_path / "src", backend, CopyOptions(algorithm="sha256"))
        again = await copy_tree(tmp_path / "src", backend, CopyOptions(algorithm="sha256"))
        assert first.ok and again.ok
        assert (again.copied, again.skipped, again.bytes_copied) == (0, len(files), 0)

        verified = await verify_tree(backend)
        assert verified.ok and verified.checked == len(files), verified.to_dict()

        victim = remote / "projet/docs/big.mov"
        with victim.open("r+b") as f:  # flip one byte, keep size and mtime
            f.seek(2 * MiB)
            byte = f.read(1)
            f.seek(2 * MiB)
            f.write(bytes([byte[0] ^ 0x40]))
        (remote / "projet/logs/run3.log").unlink()
        verified = await verify_tree(backend)
    assert verified.changed == ["projet/docs/big.mov"]
    assert verified.missing == ["projet/logs/run3.log"]
    assert not verified.ok


@pytest.mark.anyio
async def test_every_algorithm_is_hashed_on_the_server_or_read_back(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same copy verifies with server-side tools and, without them, by reading back."""
    import finalcopy.backends.sftp.shell as sftp_shell

    files = sample_tree(tmp_path / "src")
    for tools, expected in ((True, "hashing on the server"), (False, "read back over SFTP")):
        if not tools:  # a server whose shell knows none of the hash commands
            monkeypatch.setattr(sftp_shell, "detect_command", lambda: "true")
        remote = tmp_path / f"remote-{tools}"
        async with await open_remote(sshd_server, tmp_path, remote) as backend:
            assert expected in backend.strategy
            for name in ("blake3", "sha256", "xxh128"):
                report = await copy_tree(
                    tmp_path / "src", backend, CopyOptions(algorithm=name), dest=name
                )
                assert report.ok, (name, tools, report.failed)
                assert (await verify_tree(backend, name)).ok
        assert tree_content(remote / "xxh128") == files


@pytest.mark.anyio
async def test_odd_names_and_symlinks(sshd_server: SshServer, tmp_path: Path) -> None:
    names = ["it's here", "-dash", "back\\slash", "new\nline", "été/ünïcödé", "sp ace/$(x)`y`"]
    files = {name: name.encode() * 1000 for name in names}
    make_tree(tmp_path / "src", files)
    (tmp_path / "src" / "link").symlink_to("it's here")
    remote = tmp_path / "remote"
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        report = await copy_tree(tmp_path / "src", backend, CopyOptions())
        assert report.ok, report.failed
        assert (await verify_tree(backend)).ok
    assert tree_content(remote) == files
    assert os.readlink(remote / "link") == "it's here"


# -- faults -------------------------------------------------------------------------------


class _Gate:
    """A content inspector that stops the copy once, after ``at`` bytes, until released.

    Inspectors run in the reading thread on every chunk (see
    ``CopyOptions.inspectors``), so the test can drop the connection at a
    known point of the transfer.
    """

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()

    def factory(self) -> _GateInspector:
        return _GateInspector(self)


class _GateInspector:
    def __init__(self, gate: _Gate) -> None:
        self.gate = gate
        self.seen = 0

    def feed(self, chunk: memoryview) -> None:
        self.seen += len(chunk)
        if self.seen >= self.gate.at and not self.gate.reached.is_set():
            self.gate.reached.set()
            self.gate.release.wait(30)

    def finish(self) -> None:
        pass


def _big_file(path: Path, size: int) -> None:
    """Sparse, with random blocks: cheap to make, yet a wrong offset changes the hash."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset in range(0, size, 8 * MiB):
            f.seek(offset)
            f.write(os.urandom(256 * 1024))


@pytest.mark.anyio
async def test_killed_connection_resumes_from_the_proven_offset(
    sshd_server: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 96 * MiB
    _big_file(src / "video.mp4", size)
    remote = tmp_path / "remote"
    partial = remote / temp_name("video.mp4")
    gate = _Gate(at=40 * MiB)
    events: list[Event] = []

    async def drop_connection_mid_file() -> None:
        await anyio.to_thread.run_sync(gate.reached.wait, 30)
        # Let the writes in flight land, then kill every sshd session process.
        previous = -1
        while (current := partial.stat().st_size) != previous or current == 0:
            previous = current
            await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(sshd_server.kill_sessions)
        gate.release.set()

    caplog.set_level(logging.WARNING, logger="finalcopy.sftp")
    copy_options = CopyOptions(inspectors=lambda path: gate.factory)
    backend = await open_remote(sshd_server, tmp_path, remote)
    async with backend, anyio.create_task_group() as tg:
        tg.start_soon(drop_connection_mid_file)
        report = await copy_tree(src, backend, copy_options, events=events.append)
    assert report.ok, report.failed
    assert (remote / "video.mp4").read_bytes() == (src / "video.mp4").read_bytes()
    assert leftovers(remote) == []
    (done,) = [e for e in events if isinstance(e, FileFinished)]
    assert done.outcome == "resumed"
    retries = [e for e in events if isinstance(e, Retry)]  # the engine relays the backend's
    assert retries and retries[0].path.endswith("video.mp4") and retries[0].attempt >= 1
    assert any("reconnecting" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_interrupted_copy_removes_its_temporary_files(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _big_file(src / "video.mp4", 32 * MiB)
    make_tree(src, {f"small{i}.txt": b"s" * i for i in range(20)})
    remote = tmp_path / "remote"
    gate = _Gate(at=8 * MiB)
    cancel = threading.Event()

    async def interrupt_mid_file() -> None:
        await anyio.to_thread.run_sync(gate.reached.wait, 30)
        cancel.set()
        gate.release.set()

    copy_options = CopyOptions(inspectors=lambda path: gate.factory if "video" in path else None)
    backend = await open_remote(sshd_server, tmp_path, remote)
    async with backend, anyio.create_task_group() as tg:
        tg.start_soon(interrupt_mid_file)
        report = await copy_tree(src, backend, copy_options, cancel=cancel)
    assert report.interrupted
    assert not (remote / "video.mp4").exists()
    assert leftovers(remote) == []


@pytest.mark.anyio
async def test_partial_file_of_an_earlier_run_is_continued_or_replaced(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(6 * MiB)
    (src / "a.bin").write_bytes(data)
    (src / "b.bin").write_bytes(data[::-1])
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / temp_name("a.bin")).write_bytes(data[: 4 * MiB])  # a good prefix
    (remote / temp_name("b.bin")).write_bytes(b"garbage" * 1000)  # a wrong one
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        transfers = [
            FileTransfer(
                path=name,
                source=FileChunkSource(src / name, len(data), BLAKE3, 64 * 1024, threading.Event()),
                mode=0o644,
                mtime_ns=1_700_000_000_000_000_000,
                readback=True,
            )
            for name in ("a.bin", "b.bin")
        ]
        await backend.put_files(transfers, BLAKE3)
    for transfer in transfers:
        transfer.source.close()  # type: ignore[attr-defined]
    good, bad = transfers
    assert good.error is None and bad.error is None
    assert (good.resumed_from, bad.resumed_from) == (4 * MiB, 0)
    for transfer in transfers:
        assert transfer.readback_digest == transfer.source.digest()  # type: ignore[attr-defined]
    assert (remote / "a.bin").read_bytes() == data
    assert (remote / "b.bin").read_bytes() == data[::-1]
    assert leftovers(remote) == []


@pytest.mark.anyio
async def test_server_down_is_a_clear_unusable_destination(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = f"sftp://nobody@127.0.0.1:{port}{tmp_path}"
    with pytest.raises(DestinationUnusable, match=rf"cannot connect to .*127\.0\.0\.1:{port}"):
        await open_backend(dest, DestinationOptions(retry_attempts=2, timeout=5))


# -- host keys ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_host_key_is_refused_with_its_fingerprint(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    remote = tmp_path / "remote"
    with pytest.raises(HostKeyError) as info:
        await open_remote(sshd_server, tmp_path, remote, known_hosts=known_hosts)
    message = str(info.value)
    assert sshd_server.host_key_fingerprint in message
    assert "unknown" in message and "--accept-new-host-key" in message
    assert not remote.exists()
    assert known_hosts.read_text() == ""


@pytest.mark.anyio
async def test_accept_new_host_key_records_it_once(sshd_server: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"  # the folder does not exist yet
    remote = tmp_path / "remote"
    backend = await open_remote(
        sshd_server, tmp_path, remote, known_hosts=known_hosts, accept_new_host_key=True
    )
    async with backend:
        await backend.prepare()
    lines = known_hosts.read_text().splitlines()
    assert lines == [
        f"[{sshd_server.host}]:{sshd_server.port} "
        + " ".join(sshd_server.known_hosts.read_text().split()[1:3])
    ]
    # Now known: a plain connection (no accept-new) succeeds and records nothing more.
    async with await open_remote(sshd_server, tmp_path, remote, known_hosts=known_hosts):
        pass
    assert known_hosts.read_text().splitlines() == lines


@pytest.mark.anyio
async def test_changed_host_key_is_refused_even_with_accept_new(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    other_key = sshd_server.client_key.with_suffix(".pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    stale = f"[{sshd_server.host}]:{sshd_server.port} {other_key[0]} {other_key[1]}\n"
    known_hosts.write_text(stale)
    with pytest.raises(HostKeyError) as info:
        await open_remote(
            sshd_server, tmp_path, tmp_path / "remote", known_hosts=known_hosts,
            accept_new_host_key=True,
        )  # fmt: skip
    assert "CHANGED" in str(info.value)
    assert sshd_server.host_key_fingerprint in str(info.value)
    assert known_hosts.read_text() == stale
    assert not (tmp_path / "remote").exists()


# -- refusals by the server -------------------------------------------------------------------


@pytest.mark.anyio
async def test_permission_denied_is_reported_clearly(
    sshd_server: SshServer, unprivileged_user: LocalUser, public_tmp_path: Path, tmp_path: Path
) -> None:
    locked = public_tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)  # owned by root: fcnobody may enter but not create
    config = {"ssh_config": sshd_server.ssh_config, "identity_file": None, "known_hosts": None}
    alias = f"{SshServer.alias}-{unprivileged_user.name}"

    backend = await open_backend(
        f"{alias}:{locked / 'dest'}", options(sshd_server, tmp_path, **config)
    )
    async with backend:
        with pytest.raises(DestinationUnusable, match=r"(?i)permission denied"):
            await backend.prepare()
    assert not (locked / "dest").exists()

    # A writable root with one read-only folder: that file fails, the others are copied.
    writable = public_tmp_path / "writable"
    (writable / "ro").mkdir(parents=True)
    for path in (writable, writable / "ro"):
        os.chown(path, unprivileged_user.uid, unprivileged_user.gid)
    (writable / "ro").chmod(0o555)  # fcnobody's own, but without write permission
    make_tree(tmp_path / "src", {"ok.txt": b"fine", "ro/blocked.txt": b"no"})
    backend = await open_backend(f"{alias}:{writable}", options(sshd_server, tmp_path, **config))
    async with backend:
        report = await copy_tree(tmp_path / "src", backend, CopyOptions())
    assert list(report.failed) == ["ro/blocked.txt"]
    assert "ermission denied" in report.failed["ro/blocked.txt"]
    assert (writable / "ok.txt").read_bytes() == b"fine"
    assert leftovers(writable) == []


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.anyio
async def test_full_disk_fails_the_file_and_removes_the_partial(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    make_tree(tmp_path / "src", {"big.bin": os.urandom(6 * MiB), "small.txt": b"fits"})
    with small_tmpfs(tmp_path / "tiny", "2m") as tiny:
        async with await open_remote(sshd_server, tmp_path, tiny) as backend:
            small, big = [
                FileTransfer(
                    path=name,
                    source=FileChunkSource(
                        tmp_path / "src" / name,
                        (tmp_path / "src" / name).stat().st_size,
                        BLAKE3,
                        64 * 1024,
                        threading.Event(),
                    ),
                    mode=0o644,
                    mtime_ns=0,
                )
                for name in ("small.txt", "big.bin")
            ]
            await backend.put_files([small], BLAKE3)
            await backend.put_files([big], BLAKE3)
            big.source.close()  # type: ignore[attr-defined]
        assert isinstance(big.error, NoSpaceError), big.error
        assert "no space left" in str(big.error) and "big.bin" in str(big.error)
        assert small.error is None and (tiny / "small.txt").read_bytes() == b"fits"
        assert leftovers(tiny) == [] and not (tiny / "big.bin").exists()


# -- the command line ----------------------------------------------------------------------------


def test_cli_copy_and_verify_through_an_ssh_config_alias(
    sshd_server: SshServer, tmp_path: Path
) -> None:
    files = sample_tree(tmp_path / "src")
    remote = tmp_path / "remote"
    env = ssh_home(tmp_path, sshd_server)
    dest = f"{SshServer.alias}:{remote}"
    result = run_cli("copy", tmp_path / "src", dest, env=env)
    assert result.returncode == 0, result.stderr
    assert f"copied {len(files)} file(s)" in result.stdout
    assert tree_content(remote) == files

    assert run_cli("verify", dest, env=env).returncode == 0
    (remote / "projet/logs/run5.log").write_bytes(b"tampered")
    result = run_cli("verify", dest, env=env)
    assert result.returncode == 1
    assert "changed: projet/logs/run5.log" in result.stdout


def test_cli_with_explicit_key_and_known_hosts(sshd_server: SshServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"a.txt": b"a", "d/b.bin": os.urandom(100_000)})
    env = {"HOME": str(tmp_path / "empty-home"), "SSH_AUTH_SOCK": ""}
    flags = cli_identity(sshd_server)
    dest = url(sshd_server, tmp_path / "remote")
    result = run_cli("copy", tmp_path / "src", dest, *flags, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "remote/d/b.bin").read_bytes() == (tmp_path / "src/d/b.bin").read_bytes()

    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    result = run_cli(
        "copy", tmp_path / "src", url(sshd_server, tmp_path / "other"),
        "--identity", sshd_server.client_key, "--known-hosts", empty, env=env,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.startswith("finalcopy: error: ")
    assert sshd_server.host_key_fingerprint in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "other").exists()


def test_cli_refuses_a_server_login_it_cannot_make(sshd_server: SshServer, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"a.txt": b"a"})
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    result = run_cli(
        "copy", tmp_path / "src", url(sshd_server, tmp_path / "remote"),
        "--identity", stranger, "--known-hosts", sshd_server.known_hosts, "--retries", "1",
        env={"HOME": str(tmp_path / "empty-home"), "SSH_AUTH_SOCK": ""},
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "refused the login" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_permission_errors_map_to_permission_denied(
    sshd_server: SshServer, unprivileged_user: LocalUser, public_tmp_path: Path, tmp_path: Path
) -> None:
    """The exception type, not only the text: the engine decides on it."""
    locked = public_tmp_path / "locked2"
    locked.mkdir()
    locked.chmod(0o555)
    alias = f"{SshServer.alias}-{unprivileged_user.name}"
    config = {"ssh_config": sshd_server.ssh_config, "identity_file": None, "known_hosts": None}
    async with await open_backend(
        f"{alias}:{public_tmp_path}", options(sshd_server, tmp_path, **config)
    ) as backend:
        with pytest.raises(PermissionDeniedError):
            await backend.write_bytes("locked2/x", b"x")
        with pytest.raises(PermissionDeniedError):
            await backend.makedirs(["locked2/sub"])


# -- the transfer path -------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 4096, 65_536, 100_000, 261_120, 600_000])
def test_a_source_is_read_in_pieces_of_the_size_asked(tmp_path: Path, piece: int) -> None:
    """``read_many(n, size)``: pieces of exactly ``size`` (the last shorter), hashed as read."""
    data = os.urandom(3 * 261_120 + 777) if piece > 1 else os.urandom(1000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    source = FileChunkSource(path, len(data), BLAKE3, 64 * 1024, threading.Event())
    out: list[bytes] = []
    while len(batch := source.read_many(5, piece)) == 5:  # in hops, as the uploader reads
        out += batch
    out += batch
    assert b"".join(out) == data
    assert {len(p) for p in out[:-1]} == {piece}
    assert 0 < len(out[-1]) <= piece
    assert source.digest() == blake3.blake3(data).hexdigest()


class _FakeConnection:
    def __init__(self, cipher: str) -> None:
        self.cipher = cipher
        self.sent: list[tuple[int, tuple[bytes, ...]]] = []

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        self.sent.append((pkttype, args))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.cipher if name == "send_cipher" else default


@pytest.mark.parametrize(
    ("cipher", "padded"),
    [("aes128-gcm@openssh.com", False), ("chacha20-poly1305@openssh.com", False),
     ("aes256-ctr", False), ("aes128-cbc", True)],
)  # fmt: skip
def test_ignore_packets_are_skipped_except_on_cbc(cipher: str, padded: bool) -> None:
    """asyncssh's empty SSH_MSG_IGNORE before each packet defends CBC only."""
    conn = _FakeConnection(cipher)
    skip_ignore_packets(conn)  # type: ignore[arg-type]
    conn.send_packet(MSG_IGNORE, b"\0\0\0\0")
    conn.send_packet(94, b"data")
    conn.send_packet(MSG_IGNORE, b"\0\0\0\x01x")  # an ignore with a payload is someone's choice
    expected = [(94, (b"data",)), (MSG_IGNORE, (b"\0\0\0\x01x",))]
    assert conn.sent == ([(MSG_IGNORE, (b"\0\0\0\0",))] if padded else []) + expected


@pytest.mark.anyio
async def test_large_files_travel_in_full_size_writes(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed file is sent in writes of the server's max_write_len, read one hop ahead."""
    sizes: list[int] = []
    write = asyncssh.SFTPClientFile.write

    async def counted(self: asyncssh.SFTPClientFile, data: bytes, offset: int | None = None) -> int:
        sizes.append(len(data))
        return await write(self, data, offset)

    monkeypatch.setattr(asyncssh.SFTPClientFile, "write", counted)
    data = os.urandom(5 * MiB + 4321)
    (tmp_path / "big.bin").write_bytes(data)
    source = FileChunkSource(tmp_path / "big.bin", len(data), BLAKE3, 64 * 1024, threading.Event())
    remote = tmp_path / "remote"
    async with await open_remote(sshd_server, tmp_path, remote) as backend:
        await backend.makedirs([""])
        transfer = FileTransfer("big.bin", source, mode=0o644, mtime_ns=None, readback=True)
        await backend.put_files([transfer], BLAKE3)
    source.close()
    assert transfer.error is None
    assert transfer.readback_digest == source.digest()
    assert (remote / "big.bin").read_bytes() == data
    # OpenSSH's sftp-server takes 255 KiB writes (limits@openssh.com).
    limit = 255 * 1024
    assert sum(sizes) == len(data) and set(sizes[:-1]) == {limit}, sizes


def _channels(count: int) -> list[asyncssh.SFTPClient]:
    """Stand-ins for SFTP channels: Session.channel only counts them."""
    return cast("list[asyncssh.SFTPClient]", [object() for _ in range(count)])


def test_large_files_get_a_channel_of_their_own() -> None:
    """Two large files never share a channel's window while another channel has none."""
    a, b = _channels(2)
    session = Session(None, None, [a, b], None)  # type: ignore[arg-type]
    first = session.channel(stream=True)
    small = [session.channel() for _ in range(3)]  # small files keep off the busy channel
    second = session.channel(stream=True)
    assert {first, second} == {a, b} and set(small) == {second}
    session.release(first, stream=True)
    assert session.channel(stream=True) is first


@pytest.mark.anyio
async def test_a_second_large_file_waits_for_the_channel_being_opened() -> None:
    a, b = _channels(2)
    session = Session(None, None, [a], None)  # type: ignore[arg-type]

    async def open_another() -> None:
        await anyio.sleep(0.05)
        session.channels.append(b)

    session.background = asyncio.ensure_future(open_another())
    assert await session.stream_channel() is a  # a free channel: no waiting
    assert await session.stream_channel() is b


@pytest.mark.anyio
async def test_shells_are_warmed_up_for_hashes_at_once(sshd_server: SshServer) -> None:
    """After the probe, the second shell starts in the background, not when a hash needs it."""
    async with asyncssh.connect(sshd_server.host, **sshd_server.connect_options()) as conn:
        pool = ShellPool(conn, 2)
        assert await pool.run("true", parse_silence)  # the probe's shell
        pool.warm_up()
        assert pool._warming is not None
        await pool._warming
        assert len(pool._idle) == 2
        shells = list(pool._idle)
        assert await asyncio.gather(*(pool.run("true", parse_silence) for _ in range(2))) == [
            True,
            True,
        ]
        assert sorted(map(id, pool._idle)) == sorted(map(id, shells))  # no third shell started
        pool.close()
