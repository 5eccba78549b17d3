"""Open the SFTP backend on the test sshd, hermetically.

The options name the fixture's key and ``known_hosts`` and an empty SSH
configuration, so a developer's ``~/.ssh/config`` never changes what a test
connects to, and a 30 s timeout instead of the 300 s default, so a hung
server fails the test instead of stalling the suite.
"""

from __future__ import annotations

from pathlib import Path

from finalcopy.backends import Backend, DestinationOptions, open_backend
from tests.support.sshd import SshServer

__all__ = ["cli_identity", "open_remote", "options", "url"]

TIMEOUT = 30.0


def url(server: SshServer, path: Path | str, user: str | None = None) -> str:
    """``sftp://user@host:port/path`` on ``server`` (its own user unless ``user``)."""
    return f"sftp://{user or server.user}@{server.host}:{server.port}{path}"


def options(server: SshServer, tmp_path: Path, **changes: object) -> DestinationOptions:
    """Key and known_hosts from the fixture; an empty SSH configuration (not ~/.ssh/config)."""
    empty = tmp_path / "empty_ssh_config"
    empty.touch()
    base: dict[str, object] = {
        "identity_file": server.client_key,
        "known_hosts": server.known_hosts,
        "ssh_config": empty,
        "timeout": TIMEOUT,
    }
    return DestinationOptions(**{**base, **changes})  # type: ignore[arg-type]


async def open_remote(server: SshServer, tmp_path: Path, root: Path, **changes: object) -> Backend:
    """The SFTP backend on ``server`` with its root at ``root``; see :func:`options`."""
    return await open_backend(url(server, root), options(server, tmp_path, **changes))


def cli_identity(server: SshServer) -> list[str]:
    """``finalcopy copy`` options naming the fixture's key and known_hosts."""
    return ["--identity", str(server.client_key), "--known-hosts", str(server.known_hosts)]
