"""The real-part fixtures start, answer and clean up."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from tests.support.fixtures import FOREIGN_OWNER_OPTIONS
from tests.support.ntfs import NtfsMount, fs_type
from tests.support.sshd import SshServer
from tests.support.users import LocalUser, acting_as


@pytest.mark.anyio
async def test_sshd_runs_commands_and_sftp(sshd_server: SshServer) -> None:
    async with asyncssh.connect(sshd_server.host, **sshd_server.connect_options()) as conn:
        result = await conn.run("b3sum --version", check=True)
        assert str(result.stdout).startswith("b3sum ")
        async with conn.start_sftp_client() as sftp:
            assert sftp.limits.max_write_len >= 32 * 1024


@pytest.mark.anyio
async def test_sshd_survives_killed_sessions(sshd_server: SshServer) -> None:
    conn = await asyncssh.connect(sshd_server.host, **sshd_server.connect_options())
    async with conn:
        assert sshd_server.kill_sessions()
        with pytest.raises((asyncssh.Error, OSError)):
            await conn.run("true", check=True)
    async with asyncssh.connect(
        SshServer.alias, config=[str(sshd_server.ssh_config)], agent_path=None
    ) as again:
        assert (await again.run("true", check=True)).exit_status == 0


def test_ntfs_mount_is_fuseblk_and_round_trips(ntfs_mount: NtfsMount) -> None:
    mounts = Path("/proc/mounts").read_text().splitlines()
    assert any(f" {ntfs_mount.mountpoint} fuseblk " in line for line in mounts)
    assert fs_type(ntfs_mount.mountpoint) == "fuseblk"
    data = os.urandom(1 << 20)
    target = ntfs_mount.mountpoint / "dir" / "file.bin"
    target.parent.mkdir()
    target.write_bytes(data)
    assert target.read_bytes() == data


def test_ntfs_foreign_owner_gives_eperm(
    ntfs_mount_foreign_owner: NtfsMount, unprivileged_user: LocalUser
) -> None:
    assert ntfs_mount_foreign_owner.options == FOREIGN_OWNER_OPTIONS
    path = ntfs_mount_foreign_owner.mountpoint / "f"
    with acting_as(unprivileged_user):
        path.with_suffix(".tmp").write_bytes(b"x")
        path.with_suffix(".tmp").replace(path)
        with pytest.raises(PermissionError):
            os.chmod(path, 0o644)
        with pytest.raises(PermissionError):
            os.utime(path, (0, 0))
