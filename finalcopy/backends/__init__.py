"""Where bytes land: one small interface (:mod:`.base`), one module per destination kind."""

from finalcopy.backends.base import (
    Backend,
    Capabilities,
    ChunkSource,
    DestStat,
    FileTransfer,
    TempWriter,
)
from finalcopy.backends.registry import (
    DestinationOptions,
    SshLocation,
    open_backend,
    parse_destination,
)

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
