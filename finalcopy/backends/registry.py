"""Pick and open the backend a destination string names.

* ``sftp://[user@]host[:port]/path`` and ``[user@]host:path`` (a colon before
  any slash, as scp and rsync read it) → ``sftp``;
* anything else is a local path → ``file``: the POSIX backend, or the
  no-metadata one where the file system cannot keep POSIX metadata (see
  :mod:`finalcopy.backends.local.strategy`).

:data:`BACKENDS` maps each scheme to the function that opens its backend,
named as ``"module:function"`` and imported only when a destination names
the scheme (a local copy never pays for importing asyncssh), with the hint
shown when that import fails, as fsspec's ``known_implementations`` does.
A new backend is one folder under ``finalcopy/backends/`` and one line here.

A password in the destination (``sftp://user:secret@host/...``) is refused
before anything else looks at the string: the destination is repeated in
logs, reports, status files and messages, and a password there would leak.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from finalcopy.backends.base import Backend
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.errors import UsageError

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "DestinationOptions",
    "Location",
    "SshLocation",
    "open_backend",
    "parse_destination",
]

Location = Path | SshLocation
"""A parsed destination: what the opener of its scheme receives."""
Opener = Callable[[Location, DestinationOptions], Awaitable[Backend]]


@dataclass(frozen=True)
class BackendEntry:
    """Where the opener of one scheme lives, and what to install when it cannot be imported."""

    opener: str
    """``"module:function"``; the function is awaited as ``opener(location, options)``."""
    missing: str
    """Shown, with the import error, when the module cannot be imported."""


BACKENDS: dict[str, BackendEntry] = {
    "file": BackendEntry(
        "finalcopy.backends.local:open_local_backend",
        "the local backend is part of finalcopy: reinstall finalcopy",
    ),
    "sftp": BackendEntry(
        "finalcopy.backends.sftp:open_sftp_backend",
        "SFTP destinations need asyncssh: pip install asyncssh",
    ),
}

_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^@/:\[\]]+):(?P<path>.*)$")
#: ``user:password@host:path``, which scp would read as host ``user``.
_SCP_WITH_PASSWORD = re.compile(r"^[^@/:\[\]]+:[^@/]*@[^@/:]+:")
_NO_PASSWORDS = (
    "passwords in the destination are not accepted (they would appear in logs and "
    "reports); log in with a key instead: --identity FILE, a key loaded in ssh-agent, "
    "or IdentityFile in the SSH configuration"
)


def parse_destination(dest: str) -> Location:
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


def scheme_of(location: Location) -> str:
    """The key of :data:`BACKENDS` that serves ``location``."""
    return "sftp" if isinstance(location, SshLocation) else "file"


def opener_for(scheme: str) -> Opener:
    """Import the opener of ``scheme``; :class:`~finalcopy.errors.UsageError` if it cannot be."""
    entry = BACKENDS[scheme]
    module, _, name = entry.opener.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise UsageError(f"{entry.missing} ({exc})") from None
    opener: Opener = found
    return opener


async def open_backend(dest: str, options: DestinationOptions | None = None) -> Backend:
    """Open the backend for ``dest``; close it with ``await backend.aclose()``."""
    location = parse_destination(dest)
    return await opener_for(scheme_of(location))(location, options or DestinationOptions())
