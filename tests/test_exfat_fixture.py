"""The exFAT fixture: a real exfat-fuse mount with whole-second file times."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.exfat import FUSE_TYPES, ExfatMount
from tests.support.loopmount import fs_type, mounts


def test_exfat_mount_is_fuse_and_round_trips(exfat_mount: Path, exfat_volume: ExfatMount) -> None:
    assert exfat_mount == exfat_volume.mountpoint and exfat_mount.is_dir()
    target = os.path.realpath(exfat_mount)
    (entry,) = [(source, kind) for source, point, kind in mounts() if point == target]
    assert entry[1] in FUSE_TYPES, f"{entry[1]}: not the exfat-fuse driver"
    assert entry[0] == exfat_volume.device
    assert fs_type(exfat_mount / "any" / "path") == entry[1]
    data = os.urandom(1 << 20)
    path = exfat_mount / "dir" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(data)
    assert path.read_bytes() == data


def test_exfat_mtimes_are_whole_seconds(exfat_mount: Path) -> None:
    """What makes a same-size rewrite within one second invisible to size+mtime checks."""
    path = exfat_mount / "v.mp4"
    for round_ in range(3):
        with path.open("wb") as handle:
            handle.write(os.urandom(4096))
            handle.flush()
            os.fsync(handle.fileno())
        assert os.stat(path).st_mtime_ns % 1_000_000_000 == 0, round_
        time.sleep(0.37)  # land on various fractions of a second
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    assert os.stat(path).st_mtime_ns == 1_700_000_000_000_000_000
