"""A real NTFS volume, mounted with ntfs-3g, for NTFS-mode tests.

The backend has to cope with what ntfs-3g really does (type ``fuseblk``,
metadata calls that fail or are ignored, names NTFS cannot hold), so tests
use a sparse image on a loop device instead of a fake. The loop-device and
mount plumbing, shared with exfat.py, is in loopmount.py::

    with NTFS.mounted(tmp_dir, options="uid=1000,gid=1000") as volume:
        ...  # volume.mountpoint is an ntfs-3g mount until the block ends
"""

from __future__ import annotations

from tests.support.loopmount import Driver, LoopMount, fs_type

__all__ = ["NTFS", "NtfsMount", "fs_type"]

NTFS = Driver(
    name="NTFS",
    # On the loop device mkntfs reads the sector size itself (on a plain
    # file it prints geometry warnings); -Q skips zeroing, -F is harmless.
    mkfs=("mkntfs", "-F", "-Q", "-q", "-L", "finalcopy-test"),
    mount_program="ntfs-3g",
    fs_types=("fuseblk",),
    packages="ntfs-3g, mount",
    size_mib=2048,
)

#: A mounted NTFS volume: mount point, loop device, image, options.
NtfsMount = LoopMount
