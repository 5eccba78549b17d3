"""A real OpenSSH server on 127.0.0.1 for SFTP tests.

Tests talk to the same ``sshd`` and ``sftp-server`` that users run, so the
SFTP extensions (posix-rename, fsync, statvfs, limits), exec channels and
connection drops behave as they do in the field. Everything (keys, config,
logs, pid file) lives in a temporary folder; nothing on the machine is
changed except ``/run/sshd`` (required by privilege separation) and, on
request, one unprivileged test account (see ``users``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tests.support.processes import process_alive
from tests.support.users import lookup_user

__all__ = [
    "SFTP_SERVER",
    "SSHD",
    "SshServer",
    "SshdStartError",
    "descendant_pids",
    "running_sshd",
    "sshd_available",
]

SSHD = "/usr/sbin/sshd"
# The real sftp-server (not internal-sftp) runs as a child process, so a test
# can kill it, and it is the one every OpenSSH install ships.
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class SshdStartError(RuntimeError):
    """sshd did not come up; the message carries its stderr."""


@dataclass(frozen=True)
class SshServer:
    """A running sshd and everything a client needs to reach it."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_fingerprint: str
    ssh_config: Path
    process: subprocess.Popen[bytes]
    users: tuple[str, ...]
    config_file: Path
    log_file: Path

    #: Alias defined in :attr:`ssh_config` for :attr:`user`; each extra user
    #: gets ``fc-test-<name>``.
    alias: ClassVar[str] = "fc-test"

    @property
    def pid(self) -> int:
        """Pid of the listening sshd (the parent of every session)."""
        return self.process.pid

    def connect_options(self, user: str | None = None) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect(server.host, **...)``.

        Agent and default keys are switched off so the result does not depend
        on the developer's ``~/.ssh``.
        """
        return {
            "port": self.port,
            "username": user or self.user,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "agent_path": None,
            "config": [],
        }

    def session_pids(self) -> list[int]:
        """Pids of all per-connection processes (children and grandchildren)."""
        return descendant_pids(self.pid)

    def kill_sessions(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """SIGKILL every connection's processes but keep the listener.

        Clients see the connection drop as after a network failure and can
        connect again. Returns the killed pids; waits until they are gone.
        """
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(process_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd session processes survived SIGKILL: {pids}")
            time.sleep(0.02)
        return pids

    def log(self) -> str:
        """sshd's own log so far (it runs with ``-e``)."""
        return self.log_file.read_text(errors="replace")


def sshd_available() -> str | None:
    """None when a test sshd can start here, else why it cannot."""
    missing = [p for p in (SSHD, SFTP_SERVER) if not os.access(p, os.X_OK)]
    missing += [t for t in ("ssh-keygen",) if shutil.which(t) is None]
    if missing:
        return "missing " + ", ".join(missing) + " (Debian package openssh-server)"
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {PRIVSEP_DIR}: {exc}"
    return None


def descendant_pids(root: int) -> list[int]:
    """Every live process below ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces or parentheses; fields follow the last ")".
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


@contextlib.contextmanager
def running_sshd(
    tmp_dir: Path,
    extra_users: Sequence[str] = (),
    log_level: str = "VERBOSE",
    extra_config: Sequence[str] = (),
    host_ca: Path | None = None,
) -> Iterator[SshServer]:
    """Run a throw-away sshd on a random local port for the ``with`` body.

    The login user is the current user (root in CI); ``extra_users`` must
    already exist (see :func:`tests.support.users.ensure_unprivileged_user`) and accept the same
    client key. ``extra_config`` lines are appended to ``sshd_config`` (for
    example ``SetEnv``); with ``host_ca`` (a private key) the host key is also
    certified by that CA for :data:`HOST`, as for ``@cert-authority`` lines.
    On exit the listener and every session process are stopped.
    """
    reason = sshd_available()
    if reason is not None:
        raise SshdStartError(reason)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    users = (user, *(u for u in extra_users if u != user))
    for name in users:
        if lookup_user(name) is None:
            raise SshdStartError(f"user {name!r} does not exist")

    host_key = tmp_dir / "ssh_host_ed25519_key"
    client_key = tmp_dir / "client_ed25519"
    _keygen(host_key, "fc-test-host")
    _keygen(client_key, "fc-test-client")
    public = client_key.with_suffix(".pub").read_text()
    keys_dir = tmp_dir / "authorized_keys.d"
    keys_dir.mkdir(exist_ok=True)
    for name in users:
        (keys_dir / name).write_text(public)
    fingerprint = _fingerprint(host_key.with_name(host_key.name + ".pub"))
    extra = list(extra_config)
    if host_ca is not None:
        extra.append(f"HostCertificate {_certify_host_key(host_key, host_ca)}")

    # A free port can be taken by someone else before sshd binds it: retry.
    last_error = ""
    for _attempt in range(5):
        port = _free_port()
        config = tmp_dir / "sshd_config"
        log_file = tmp_dir / "sshd.log"
        config.write_text(
            _sshd_config(tmp_dir, port, host_key, keys_dir, users, log_level)
            + "".join(f"{line}\n" for line in extra)
        )
        with log_file.open("ab") as log_out:
            process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=log_out,
            )
        try:
            _wait_for_banner(process, port, log_file)
        except SshdStartError as exc:
            _stop(process)
            last_error = str(exc)
            if "Address already in use" in last_error:
                continue
            raise
        break
    else:
        raise SshdStartError(f"sshd found no free port: {last_error}")

    try:
        host_pub = host_key.with_name(host_key.name + ".pub").read_text().split()
        known_hosts = tmp_dir / "known_hosts"
        known_hosts.write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        ssh_config = tmp_dir / "ssh_config"
        ssh_config.write_text(
            "".join(
                _client_block(alias, port, name, client_key, known_hosts)
                for alias, name in [
                    (SshServer.alias, user),
                    *((f"{SshServer.alias}-{u}", u) for u in users[1:]),
                ]
            )
        )
        yield SshServer(
            host=HOST,
            port=port,
            user=user,
            client_key=client_key,
            known_hosts=known_hosts,
            host_key_fingerprint=fingerprint,
            ssh_config=ssh_config,
            process=process,
            users=users,
            config_file=config,
            log_file=log_file,
        )
    finally:
        _stop(process)


def _sshd_config(
    tmp_dir: Path,
    port: int,
    host_key: Path,
    keys_dir: Path,
    users: Sequence[str],
    log_level: str,
) -> str:
    me = pwd.getpwuid(os.geteuid()).pw_name
    lines = [
        f"ListenAddress {HOST}:{port}",
        f"HostKey {host_key}",
        f"PidFile {tmp_dir / 'sshd.pid'}",
        # Keys are served by cat running as sshd's own user, so an unprivileged
        # login user need not reach the (often 0700) temporary folder.
        "AuthorizedKeysFile none",
        f"AuthorizedKeysCommand {shutil.which('cat') or '/usr/bin/cat'} {keys_dir}/%u",
        f"AuthorizedKeysCommandUser {me}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        # Room for parallel transfers: many channels per connection and many
        # connections still authenticating at once.
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "LoginGraceTime 30",
        f"LogLevel {log_level}",
        f"AllowUsers {' '.join(users)}",
        f"Subsystem sftp {SFTP_SERVER}",
    ]
    if _openssh_version() >= (9, 8):
        # Killed sessions and probe connections must not get 127.0.0.1 banned.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _client_block(alias: str, port: int, user: str, key: Path, known_hosts: Path) -> str:
    return (
        f"Host {alias}\n"
        f"    HostName {HOST}\n"
        f"    Port {port}\n"
        f"    User {user}\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    StrictHostKeyChecking yes\n"
    )


def _keygen(path: Path, comment: str) -> None:
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _certify_host_key(host_key: Path, ca: Path) -> Path:
    """Sign ``host_key``'s public half as a host certificate for :data:`HOST`; its path."""
    public = host_key.with_name(host_key.name + ".pub")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "fc-test-host", "-n", HOST, str(public)],
        check=True,
        capture_output=True,
    )
    return host_key.with_name(host_key.name + "-cert.pub")


def _fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def _openssh_version() -> tuple[int, int]:
    proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stderr + proc.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_banner(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Wait until our sshd (not a stranger on the port) sends its banner."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise SshdStartError(
                f"sshd exited with {process.returncode}:\n{log_file.read_text(errors='replace')}"
            )
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                banner = sock.recv(256)
            if banner.startswith(b"SSH-2.0-"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SshdStartError(
                f"sshd did not answer on {HOST}:{port} within {START_TIMEOUT}s:\n"
                f"{log_file.read_text(errors='replace')}"
            )
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop listener and sessions; sessions call setsid, so no killpg."""
    sessions = descendant_pids(process.pid)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
