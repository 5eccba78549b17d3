"""A real NTFS volume, mounted with ntfs-3g, for NTFS-mode tests.

The backend has to cope with what ntfs-3g really does (type ``fuseblk``,
metadata calls that fail or are ignored, names NTFS cannot hold), so tests
use a sparse image on a loop device instead of a fake. Each image records
the pid of the process that made it, so a later run can unmount and detach
what a crashed run left behind without touching live ones (the loop-device
and mount plumbing is shared with exfat.py, in loopmount.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import loopmount
from tests.support.loopmount import LoopMount, fs_type

__all__ = [
    "IMAGE_NAME",
    "NtfsMount",
    "cleanup_stale",
    "fs_type",
    "mounted_ntfs",
    "ntfs_available",
]

IMAGE_NAME = "finalcopy-ntfs.img"
TOOLS = ("losetup", "mkntfs", "ntfs-3g", "umount")


@dataclass(frozen=True)
class NtfsMount(LoopMount):
    """A mounted NTFS volume."""


def ntfs_available() -> str | None:
    """None when an ntfs-3g volume can be mounted here, else why not."""
    return loopmount.unavailable(TOOLS, "ntfs-3g, mount")


@contextlib.contextmanager
def mounted_ntfs(tmp_dir: Path, size_mib: int = 2048, options: str = "") -> Iterator[NtfsMount]:
    """Make, mount and finally remove an NTFS volume in ``tmp_dir``.

    ``options`` go to ``ntfs-3g -o`` (e.g. ``"uid=1000,gid=1000,umask=022"``).
    Unmounting, detaching and deleting the image happen even when the body
    raises; the image is sparse, so only written data takes disk space.
    """
    reason = ntfs_available()
    if reason is not None:
        raise RuntimeError(f"cannot mount NTFS: {reason}")

    def make_fs(device: str) -> list[str]:
        # On the loop device mkntfs reads the sector size itself (on a plain
        # file it prints geometry warnings); -Q skips zeroing, -F is harmless.
        return ["mkntfs", "-F", "-Q", "-q", "-L", "finalcopy-test", device]

    def mount(device: str, mountpoint: Path) -> list[str]:
        return ["ntfs-3g", *(["-o", options] if options else []), device, str(mountpoint)]

    with loopmount.mounted_image(
        tmp_dir,
        image_name=IMAGE_NAME,
        size_mib=size_mib,
        make_fs=make_fs,
        mount=mount,
        fs_types=("fuseblk",),
        options=options,
    ) as volume:
        yield NtfsMount(volume.mountpoint, volume.device, volume.image, volume.options)


def cleanup_stale(root: Path) -> list[str]:
    """Unmount, detach and delete NTFS test images under ``root`` whose owner is gone.

    Returns the loop devices it detached. Images of live processes (another
    pytest worker, say) are left alone.
    """
    return loopmount.cleanup_stale(root, IMAGE_NAME)
