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

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import loopmount
from tests.support.fixtures import require_part
from tests.support.loopmount import LoopMount

__all__ = [
    "FUSE_TYPES",
    "IMAGE_NAME",
    "ExfatMount",
    "cleanup_stale",
    "exfat_available",
    "exfat_base_dir",
    "exfat_mount",
    "exfat_volume",
    "mounted_exfat",
]

IMAGE_NAME = "finalcopy-exfat.img"
TOOLS = ("losetup", "mkfs.exfat", "mount.exfat-fuse", "umount")
#: What exfat-fuse mounts show as in /proc/self/mountinfo (``exfat`` would be the kernel's).
FUSE_TYPES = ("fuseblk", "fuse.exfat", "fuseblk.exfat")
_PREFIX = "finalcopy-exfat-"


@dataclass(frozen=True)
class ExfatMount(LoopMount):
    """A mounted exFAT volume (exfat-fuse)."""


def exfat_available() -> str | None:
    """None when an exfat-fuse volume can be mounted here, else why not."""
    return loopmount.unavailable(TOOLS, "exfatprogs, exfat-fuse, mount")


@contextlib.contextmanager
def mounted_exfat(tmp_dir: Path, size_mib: int = 256, options: str = "") -> Iterator[ExfatMount]:
    """Make, mount (exfat-fuse) and finally remove an exFAT volume in ``tmp_dir``.

    ``options`` go to ``mount.exfat-fuse -o`` (e.g. ``"uid=1000,gid=1000"``).
    """
    reason = exfat_available()
    if reason is not None:
        raise RuntimeError(f"cannot mount exFAT: {reason}")

    def make_fs(device: str) -> list[str]:
        return ["mkfs.exfat", "-L", "fc-test", device]  # labels hold 11 characters

    def mount(device: str, mountpoint: Path) -> list[str]:
        extra = ["-o", options] if options else []
        return ["mount.exfat-fuse", *extra, device, str(mountpoint)]

    with loopmount.mounted_image(
        tmp_dir,
        image_name=IMAGE_NAME,
        size_mib=size_mib,
        make_fs=make_fs,
        mount=mount,
        fs_types=FUSE_TYPES,
        options=options,
    ) as volume:
        yield ExfatMount(volume.mountpoint, volume.device, volume.image, volume.options)


def cleanup_stale(root: Path) -> list[str]:
    """Unmount, detach and delete exFAT test images under ``root`` whose owner is gone."""
    return loopmount.cleanup_stale(root, IMAGE_NAME)


@pytest.fixture(scope="session")
def exfat_base_dir() -> Path:
    """Where volumes go: outside pytest's 0700 tree, so other users reach them.

    Unmounts and detaches what killed earlier runs left there, once.
    """
    require_part(exfat_available())
    base = Path(tempfile.gettempdir())
    cleanup_stale(base)
    loopmount.sweep_scratch_dirs(base, _PREFIX)
    return base


@pytest.fixture
def exfat_volume(exfat_base_dir: Path) -> Iterator[ExfatMount]:
    """A fresh 256 MiB (sparse) exfat-fuse volume, per test: mount point, loop device, image."""
    with loopmount.scratch_dir(exfat_base_dir, _PREFIX) as tmp_dir, mounted_exfat(tmp_dir) as mount:
        yield mount


@pytest.fixture
def exfat_mount(exfat_volume: ExfatMount) -> Path:
    """The mount point of a fresh exfat-fuse volume (see :func:`exfat_volume`)."""
    return exfat_volume.mountpoint
