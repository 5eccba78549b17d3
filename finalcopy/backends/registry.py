"""Pick and open the backend a destination string names.

* ``sftp://[user@]host[:port]/path`` and ``[user@]host:path`` (a colon before
  any slash, as scp and rsync read it) → SFTP;
* anything else is a local path → the POSIX backend, or the no-metadata
  backend when the file system cannot keep POSIX metadata (see
  :mod:`finalcopy.backends.ntfs`).

A password in the destination (``sftp://user:secret@host/...``) is refused
before anything else looks at the string: the destination is repeated in
logs, reports, status files and messages, and a password there would leak.

Backend modules are imported only when chosen, so a local copy never pays for
importing asyncssh.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from finalcopy.backends.base import Backend
from finalcopy.errors import UsageError

MetadataMode = Literal["auto", "posix", "none"]
NameMode = Literal["reject", "map"]


@dataclass(frozen=True)
class DestinationOptions:
    """Everything a backend may need to know besides the destination string."""

    metadata: MetadataMode = "auto"
    """``auto`` detects NTFS/FUSE and probes; ``posix``/``none`` force a mode."""
    ntfs_names: NameMode = "reject"
    """On no-metadata destinations: refuse names NTFS cannot hold, or map them."""
    identity_file: Path | None = None
    port: int | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    ssh_config: Path | None = None
    """OpenSSH client configuration file to read instead of ``~/.ssh/config``."""
    retry_attempts: int = 3
    timeout: float = 300.0
    jobs: int = 4
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SshLocation:
    """A parsed SFTP destination."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        path = self.path if self.path.startswith("/") else f"/~/{self.path}"
        return f"sftp://{user}{self.host}{port}{path}"


_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^@/:\[\]]+):(?P<path>.*)$")
#: ``user:password@host:path``, which scp would read as host ``user``.
_SCP_WITH_PASSWORD = re.compile(r"^[^@/:\[\]]+:[^@/]*@[^@/:]+:")
_NO_PASSWORDS = (
    "passwords in the destination are not accepted (they would appear in logs and "
    "reports); log in with a key instead: --identity FILE, a key loaded in ssh-agent, "
    "or IdentityFile in the SSH configuration"
)


def parse_destination(dest: str) -> Path | SshLocation:
    """Tell a local path from a remote one, as scp and rsync do."""
    if not dest:
        raise UsageError("the destination is empty")
    if "://" in dest:
        try:
            parts = urlsplit(dest)
        except ValueError:
            raise UsageError(
                "malformed destination URL (expected sftp://[user@]host[:port]/path)"
            ) from None
        if parts.password is not None:
            raise UsageError(_NO_PASSWORDS)
        if not dest.startswith("sftp://"):
            raise UsageError(f"unsupported URL scheme in '{dest}' (use a path or sftp://)")
        if not parts.hostname:
            raise UsageError(f"no host in '{dest}' (expected sftp://[user@]host[:port]/path)")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"bad port in '{dest}'") from None
        path = unquote(parts.path) or "/"
        if path.startswith("/~/"):
            path = path[3:] or "."
        return SshLocation(
            host=parts.hostname,
            path=path,
            user=unquote(parts.username) if parts.username else None,
            port=port,
        )
    if _SCP_WITH_PASSWORD.match(dest):
        raise UsageError(_NO_PASSWORDS)
    match = _SCP_LIKE.match(dest)
    if match and "/" not in dest.split(":", 1)[0]:
        return SshLocation(
            host=match["host"].strip("[]"),
            path=match["path"] or ".",
            user=match["user"],
        )
    return Path(dest)


def _load(module: str, attribute: str, hint: str) -> object:
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as exc:
        raise UsageError(f"{hint} ({exc})") from None


async def open_backend(dest: str, options: DestinationOptions | None = None) -> Backend:
    """Open the backend for ``dest``; close it with ``await backend.aclose()``."""
    options = options or DestinationOptions()
    location = parse_destination(dest)
    if isinstance(location, SshLocation):
        open_sftp = _load(
            "finalcopy.backends.sftp",
            "open_sftp_backend",
            "SFTP destinations need asyncssh: pip install asyncssh",
        )
        backend: Backend = await open_sftp(location, options)  # type: ignore[operator]
        return backend
    open_local = _load("finalcopy.backends.ntfs", "open_local_backend", "internal error")
    backend = await open_local(location, options)  # type: ignore[operator]
    return backend
