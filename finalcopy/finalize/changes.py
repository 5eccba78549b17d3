"""Did a source file change after the copy read it? Decided before its deletion.

A file may be rewritten between the moment its copy read it and the moment
its source is deleted, and the rewrite may keep the size. Its identity
(device, inode, size, mtime, ctime — ctime cannot be set back by a user) is
taken when the copy opens it, and its size and mtime are checked unchanged at
end of file (:class:`~finalcopy.engine.source.SourceRead`). Before deletion,
the same identity proves the file unchanged only where timestamps can be
trusted to move on every write:

* on local file systems with fine timestamps and a real ctime (ext4, xfs,
  btrfs, tmpfs…), and only if the timestamps are older than the moment the
  copy opened the file by more than a clock tick (a write in the same tick
  could leave them as they were);
* never on FAT, exFAT, NTFS through FUSE (whole or even seconds, ctime that
  mirrors the mtime) nor on network file systems (the server's clock stamps
  the file): there every file is hashed again.

A file hashed again is first left alone until its newest timestamp is
:data:`COARSE_NS` old (so that any later write moves it), hashed between two
equal ``lstat``, and deleted only if it hashes to the digest proven at the
destination.
"""

from __future__ import annotations

import os
from pathlib import Path

from finalcopy.backends.local.strategy import filesystem_type
from finalcopy.engine.source import SourceIdentity, SourceRead

FINE_NS = 50_000_000
"""Fine-grained file systems stamp with the kernel's coarse clock (a tick, ≤ 10 ms)."""
COARSE_NS = 4_000_000_000
"""FAT stores even seconds, exFAT (through FUSE) whole seconds: twice the worst."""
FINE_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "bcachefs"})


def granularity_ns(folder: Path) -> int | None:
    """The margin metadata needs on ``folder``'s file system; None when it proves nothing."""
    try:
        fstype, _ = filesystem_type(folder)
    except OSError:
        return None
    return FINE_NS if fstype in FINE_TYPES else None


def provably_unchanged(seen: SourceRead, now: os.stat_result, margin_ns: int | None) -> bool:
    """Whether ``now`` proves the file holds the bytes the copy read (see module docstring)."""
    if margin_ns is None or SourceIdentity.of(now) != seen.identity:
        return False
    newest = max(seen.identity.mtime_ns, seen.identity.ctime_ns)
    return seen.opened_ns - newest > margin_ns
