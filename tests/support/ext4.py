"""A real ext4 volume on a loop device, for the durability of batches of files.

On ext4 the local backend makes the files of a batch durable with one
``syncfs`` per folder instead of one ``fsync`` per file
(``finalcopy/backends/local/durability.py``); the tests check that choice
and its failure handling on the kernel's own ext4, not on whatever file
system holds the temporary folder, and the benchmarks copy to a fresh one.
The volume is a sparse image on a loop device made with ``mkfs.ext4``
(e2fsprogs) and mounted with ``mount``; leftovers of a killed run are
cleaned up as for NTFS (see loopmount.py). The fixture is ``ext4_mount``
in fixtures.py.
"""

from __future__ import annotations

from tests.support.loopmount import Driver

__all__ = ["EXT4"]

EXT4 = Driver(
    name="ext4",
    mkfs=("mkfs.ext4", "-q", "-F"),
    mount_program="mount",
    fs_types=("ext4",),
    packages="e2fsprogs, mount",
    size_mib=256,
)
