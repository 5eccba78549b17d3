"""Where the copies land: a local folder or a folder on an SSH server.

``SshTarget`` (:mod:`finalcopy.bench.tools`, shared with ``finalcopy bench
--compare``) carries the client options every OpenSSH-based tool gets; a
``Destination`` is the folder each run copies into, emptied between runs and
listed afterwards to check the copy. ``start_sshd``, ``mount_ntfs`` and
``mount_ext4`` lend the test suite's real parts (``tests/support/``) to the
benchmark.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from finalcopy.bench.measure import first_line
from finalcopy.bench.tools import TARGETS, SshTarget
from tests.support import loopmount
from tests.support.ext4 import EXT4
from tests.support.ntfs import NTFS
from tests.support.sshd import running_sshd

__all__ = [
    "DEFAULT_CIPHER",
    "DEST_NAME",
    "REPO_ROOT",
    "TARGETS",
    "Destination",
    "LocalDestination",
    "RemoteDestination",
    "SshTarget",
    "client_config",
    "first_line",
    "fs_type",
    "local_digests",
    "local_listing",
    "mount_ext4",
    "mount_ntfs",
    "remote_run",
    "ssh_url",
    "start_sshd",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The only name the runner ever deletes in a destination root: random for each
#: invocation, so it is never a folder that was there before the run.
DEST_NAME = f"finalcopy-bench-dst-{secrets.token_hex(4)}"
DEFAULT_CIPHER = "aes128-gcm@openssh.com"


def ssh_url(ssh: SshTarget, path: str) -> str:
    """``sftp://user@host:port/path`` for finalcopy."""
    return f"sftp://{ssh.login}:{ssh.port or 22}{path}"


def client_config(ssh: SshTarget) -> str:
    """An ``ssh_config`` block with the same settings, for tools without flags (finalcopy)."""
    lines = [f"Host {ssh.host}", f"    Port {ssh.port or 22}"]
    if ssh.user:
        lines.append(f"    User {ssh.user}")
    lines += ["    StrictHostKeyChecking yes", "    Compression no"]
    if ssh.cipher:
        lines.append(f"    Ciphers {ssh.cipher}")
    if ssh.known_hosts is not None:
        lines.append(f"    UserKnownHostsFile {ssh.known_hosts}")
    if ssh.key is not None:
        lines += [f"    IdentityFile {ssh.key}", "    IdentitiesOnly yes"]
    return "\n".join(lines) + "\n"


def remote_run(
    ssh: SshTarget, command: str, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """Run a shell command on the server."""
    return subprocess.run(
        [*ssh.ssh_argv(), ssh.login, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


class Destination(Protocol):
    """The folder each run copies into, emptied between runs."""

    @property
    def path(self) -> str:
        """What tools receive as their destination argument (a path)."""

    def clear(self) -> None:
        """Remove the previous run's copy, if any."""

    def listing(self) -> dict[str, int]:
        """Size of every regular file below :attr:`path`, by relative POSIX path."""

    def digests(self) -> dict[str, str]:
        """SHA-256 of every regular file below :attr:`path`, by relative path."""

    def describe(self) -> str:
        """File system or server, for the report's context."""


@dataclass
class LocalDestination:
    """A folder on a mounted file system (tmpfs, disk, ntfs-3g)."""

    root: Path

    @property
    def path(self) -> str:
        return str(self.root / DEST_NAME)

    def clear(self) -> None:
        target = Path(self.path)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)

    def listing(self) -> dict[str, int]:
        return local_listing(Path(self.path))

    def digests(self) -> dict[str, str]:
        return local_digests(Path(self.path))

    def describe(self) -> str:
        return f"{self.root} ({fs_type(self.root)})"


@dataclass
class RemoteDestination:
    """A folder on an SSH server, managed through ``ssh`` commands."""

    ssh: SshTarget
    root: str

    @property
    def path(self) -> str:
        return posixpath.join(self.root, DEST_NAME)

    def clear(self) -> None:
        proc = remote_run(self.ssh, f"rm -rf -- {shlex.quote(self.path)}")
        if proc.returncode != 0:
            raise RuntimeError(f"remote cleanup failed: {first_line(proc.stderr)}")

    def listing(self) -> dict[str, int]:
        # NUL-separated so no file name can break the parsing.
        proc = remote_run(self.ssh, f"find {shlex.quote(self.path)} -type f -printf '%s %P\\0'")
        if proc.returncode != 0:
            return {}
        sizes: dict[str, int] = {}
        for entry in proc.stdout.split(b"\0"):
            if entry:
                size, _, name = entry.partition(b" ")
                sizes[os.fsdecode(name)] = int(size)
        return sizes

    def digests(self) -> dict[str, str]:
        proc = remote_run(
            self.ssh,
            f"cd {shlex.quote(self.path)} && find . -type f -print0 | xargs -0 -r sha256sum",
            timeout=3600,
        )
        result: dict[str, str] = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            result[name.removeprefix("./")] = digest
        return result

    def describe(self) -> str:
        return f"{self.root} on {self.ssh.login} port {self.ssh.port or 22} (SFTP)"


def local_listing(root: Path) -> dict[str, int]:
    """Sizes of regular files below ``root`` (symlinks are not followed)."""
    sizes: dict[str, int] = {}
    for folder, _dirs, names in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if st.st_mode & 0o170000 == 0o100000:
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                sizes[rel.replace(os.sep, "/")] = st.st_size
    return sizes


def local_digests(root: Path) -> dict[str, str]:
    """SHA-256 of each regular file below ``root``; the sha256sum format other hosts use."""
    result: dict[str, str] = {}
    for rel in local_listing(root):
        with open(root / rel, "rb") as handle:
            result[rel] = hashlib.file_digest(handle, "sha256").hexdigest()
    return result


def fs_type(path: Path) -> str:
    """File system type of the mount holding ``path`` (the test suite's reading of mountinfo)."""
    return loopmount.fs_type(path) or "unknown"


def start_sshd(stack: contextlib.ExitStack, folder: Path, cipher: str) -> SshTarget:
    """Start the test suite's throw-away sshd on 127.0.0.1 until ``stack`` closes."""
    server = stack.enter_context(running_sshd(folder, log_level="ERROR"))
    return SshTarget(
        server.host, server.user, server.port, server.client_key, server.known_hosts, cipher
    )


def mount_ext4(stack: contextlib.ExitStack, folder: Path, size_mib: int) -> Path:
    """Make and mount a fresh sparse ext4 image in a new folder under ``folder``, until
    ``stack`` closes.

    A fresh file system, so runs on different days do not inherit a
    fragmented, full or slow one; put ``folder`` on a disk, so that fsync and
    sync reach a device (on tmpfs they would cost nothing). The loop device
    works in direct I/O, so the volume's writes reach that disk as a real
    disk's would: buffered, they only became a copy into the image file's
    page cache, where starting write-back early (as finalcopy does) or not
    made no difference.
    """
    EXT4.prepare_base(folder)  # what a killed run left there, never a live volume
    # Removed after, except when the volume failed to unmount: never deleted through a mount.
    tmp = stack.enter_context(loopmount.scratch_dir(folder, EXT4.scratch_prefix))
    volume = EXT4.mounted(tmp, size_mib=size_mib, direct_io=True)
    return stack.enter_context(volume).mountpoint


def mount_ntfs(stack: contextlib.ExitStack, folder: Path, size_mib: int) -> Path:
    """Make and mount a sparse NTFS image (the test suite's helper) until ``stack`` closes.

    The image lives in ``folder``: on tmpfs, the timings show what ntfs-3g
    and the tool cost in CPU, without a disk's speed mixed in.
    """
    return stack.enter_context(NTFS.mounted(folder, size_mib=size_mib)).mountpoint
