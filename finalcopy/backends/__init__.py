"""Where bytes land: one small interface (:mod:`.base`), one folder per destination kind."""

from finalcopy.backends.base import (
    Backend,
    Capabilities,
    DestStat,
    FileTransfer,
    TempWriter,
)
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.backends.registry import open_backend, parse_destination
from finalcopy.backends.source import ChunkSource

__all__ = [
    "Backend",
    "Capabilities",
    "ChunkSource",
    "DestStat",
    "DestinationOptions",
    "FileTransfer",
    "SshLocation",
    "TempWriter",
    "open_backend",
    "parse_destination",
]
