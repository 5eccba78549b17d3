"""Send functions a helper process can be handed (pickled by name: a test's own are not
in the helper, which was forked before the test defined them)."""

from __future__ import annotations

from finalcopy.backends.base import FileTransfer
from finalcopy.hashing import Algorithm


def fill_every_outcome(transfers: list[FileTransfer], algorithm: Algorithm) -> None:
    """Read each source whole and fill every outcome field, file ``n`` (from 1) with ``n``."""
    for number, transfer in enumerate(transfers, 1):
        while transfer.source.read_block(1 << 20):
            pass
        transfer.readback_digest = f"{number:02x}"
        transfer.dest_mtime_ns = number
        transfer.resumed_from = 100 * number
        transfer.attempts = number + 1
        transfer.times.stream, transfer.times.commit, transfer.times.verify = 1.5, 2.5, 3.5
