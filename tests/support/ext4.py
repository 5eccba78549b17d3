"""A real ext4 volume on a loop device, for the durability of batches of files.

On ext4 the local backend makes the files of a batch durable with one
``syncfs`` per folder instead of one ``fsync`` per file
(``finalcopy/backends/local/durability.py``); the tests check that choice
and its failure handling on the kernel's own ext4, not on whatever file
system holds the temporary folder. The volume is a sparse image on a loop
device made with ``mkfs.ext4`` (e2fsprogs) and mounted with ``mount``;
leftovers of a killed run are cleaned up as for NTFS (see loopmount.py).

The fixture is registered in ``tests/conftest.py``. Where a part is missing
the test is skipped with the reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import volume
from tests.support.loopmount import Driver

__all__ = ["EXT4", "ext4_mount"]

EXT4 = Driver(
    name="ext4",
    mkfs=("mkfs.ext4", "-q", "-F"),
    mount_program="mount",
    fs_types=("ext4",),
    packages="e2fsprogs, mount",
    size_mib=256,
)


@pytest.fixture
def ext4_mount() -> Iterator[Path]:
    """The mount point of a fresh 256 MiB (sparse) ext4 volume, per test."""
    for mount in volume(EXT4):
        yield mount.mountpoint
