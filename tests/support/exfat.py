"""A real exFAT volume, mounted with exfat-fuse, for coarse-timestamp tests.

Camera cards and USB disks are exFAT. Seen through exfat-fuse, file times
have whole-second resolution (``st_mtime_ns % 10**9 == 0``, even after
``utime`` with nanoseconds), so a same-size rewrite within the same second
leaves size and mtime unchanged: the case issue 8 (item 6) tests. The
volume is a sparse image on a loop device made with ``mkfs.exfat``
(exfatprogs) and mounted with ``mount.exfat-fuse`` (exfat-fuse), never the
in-kernel driver: the mount must show as ``fuseblk`` (or ``fuse.exfat``) in
/proc/self/mountinfo. Leftovers of a killed run are cleaned up as for NTFS
(see loopmount.py).

The fixtures are registered in ``tests/conftest.py``::

    pytest_plugins = ["tests.support.fixtures", "tests.support.exfat"]

Where a part is missing the test is skipped with the reason, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import volume
from tests.support.loopmount import Driver, LoopMount

__all__ = ["EXFAT", "FUSE_TYPES", "ExfatMount", "exfat_mount", "exfat_volume"]

#: What exfat-fuse mounts show as in /proc/self/mountinfo (``exfat`` would be the kernel's).
FUSE_TYPES = ("fuseblk", "fuse.exfat", "fuseblk.exfat")

EXFAT = Driver(
    name="exFAT",
    mkfs=("mkfs.exfat", "-L", "fc-test"),  # labels hold 11 characters
    mount_program="mount.exfat-fuse",
    fs_types=FUSE_TYPES,
    packages="exfatprogs, exfat-fuse, mount",
    size_mib=256,
)

#: A mounted exFAT volume (exfat-fuse): mount point, loop device, image, options.
ExfatMount = LoopMount


@pytest.fixture
def exfat_volume() -> Iterator[ExfatMount]:
    """A fresh 256 MiB (sparse) exfat-fuse volume, per test: mount point, loop device, image."""
    yield from volume(EXFAT)


@pytest.fixture
def exfat_mount(exfat_volume: ExfatMount) -> Path:
    """The mount point of a fresh exfat-fuse volume (see :func:`exfat_volume`)."""
    return exfat_volume.mountpoint
