"""Local destinations: the POSIX backend, the no-metadata one (NTFS, FAT, exFAT), and the choice."""

from finalcopy.backends.local.backend import LocalBackend
from finalcopy.backends.local.nometadata import NoMetadataBackend
from finalcopy.backends.local.strategy import open_local_backend

__all__ = ["LocalBackend", "NoMetadataBackend", "open_local_backend"]
