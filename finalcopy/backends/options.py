"""What a backend is told besides its location: :class:`DestinationOptions`.

Also the parsed form of an SFTP destination (:class:`SshLocation`), which
the registry hands to the SFTP backend with the options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finalcopy.choices import MetadataMode, NameMode

if TYPE_CHECKING:
    from finalcopy.backends.helpers import Helpers


@dataclass(frozen=True)
class DestinationOptions:
    """Everything a backend may need to know besides the destination string."""

    metadata: MetadataMode = "auto"
    """``auto`` detects NTFS/FUSE and probes; ``posix``/``none`` force a mode."""
    ntfs_names: NameMode = "reject"
    """On no-metadata destinations: refuse names NTFS cannot hold, or map them."""
    identity_file: Path | None = None
    port: int | None = None
    """SSH port when the destination names none."""
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    ssh_config: Path | None = None
    """OpenSSH client configuration file to read instead of ``~/.ssh/config``."""
    retry_attempts: int = 3
    """Attempts per network operation."""
    timeout: float = 300.0
    """Seconds a network operation may go without progress."""
    jobs: int = 4
    """Files the engine keeps in flight (the SFTP backend opens channels to match)."""
    helpers: Helpers | None = None
    """Processes the backend may give batches to while it sends one itself (the caller
    forked them, see :mod:`finalcopy.backends.helpers`, and closes them)."""


@dataclass(frozen=True)
class SshLocation:
    """A parsed SFTP destination."""

    host: str
    """A host name, an address, or an alias of the SSH configuration."""
    path: str
    user: str | None = None
    port: int | None = None
