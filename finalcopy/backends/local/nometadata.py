"""The local backend for file systems that cannot keep POSIX metadata: NTFS, FAT, exFAT.

On such a file system ``chmod``/``utime`` fail with EPERM (a disk mounted
with ``uid=``/``gid=`` for another user) or succeed and change nothing (root
on a default ntfs-3g mount: every mode reads 0777). :class:`NoMetadataBackend`
never calls chmod, fchmod, utime or chown; it still writes to a temporary
name, fsyncs and renames over the final name (ntfs-3g supports all three,
including a rename over an existing file), and applies the Windows name
rules of :mod:`.ntfs_names` before a byte is copied. Which backend a local
destination gets is decided by :mod:`.strategy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finalcopy.backends.base import Capabilities
from finalcopy.backends.local.backend import LocalBackend
from finalcopy.backends.local.ntfs_names import check_names, encode_path
from finalcopy.choices import NameMode

#: Bytes per write() on these file systems: on FUSE every write() also costs the daemon a
#: getxattr("security.capability") round trip (ntfs-3g), so fewer, larger writes spare it.
FUSE_BLOCK = 1 << 20


class NoMetadataBackend(LocalBackend):
    """Content only, never chmod/utime/chown, and names Windows can hold.

    Names are checked by :meth:`name_problems` over the whole plan. With
    ``names="map"`` the offending ones are mapped instead (see
    :mod:`~finalcopy.backends.local.ntfs_names`) and :meth:`dest_name` returns
    the stored form of every path given to the last :meth:`name_problems`
    call; other paths (the engine's own files) get the context-free mapping.
    """

    block = FUSE_BLOCK

    def __init__(
        self,
        root: Path,
        *,
        reason: str,
        names: NameMode = "reject",
        symlinks: bool = True,
    ) -> None:
        super().__init__(root)
        self.capabilities = Capabilities(posix_metadata=False, symlinks=symlinks, local_path=True)
        self.names = names
        how = "mapped reversibly" if names == "map" else "rejected"
        self.strategy = f"{reason}; names Windows cannot hold are {how}"
        self._stored: dict[str, str] = {}

    def name_problems(self, paths: Sequence[str]) -> list[str]:
        check = check_names(paths, map_names=self.names == "map")
        self._stored = check.stored
        return check.problems

    def dest_name(self, path: str) -> str:
        if self.names != "map":
            return path
        return self._stored.get(path) or encode_path(path)
