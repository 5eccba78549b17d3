"""A real NTFS volume, mounted with ntfs-3g, for NTFS-mode tests.

The backend has to cope with what ntfs-3g really does (type ``fuseblk``,
metadata calls that fail or are ignored, names NTFS cannot hold), so tests
use a sparse image on a loop device instead of a fake. Each image records
the pid of the process that made it, so a later run can unmount and detach
what a crashed run left behind without touching live ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import process_alive

__all__ = [
    "IMAGE_NAME",
    "NtfsMount",
    "cleanup_stale",
    "fs_type",
    "mounted_ntfs",
    "ntfs_available",
]

IMAGE_NAME = "finalcopy-ntfs.img"
OWNER_SUFFIX = ".owner"
TOOLS = ("losetup", "mkntfs", "ntfs-3g", "umount")
MOUNT_TIMEOUT = 10.0


@dataclass(frozen=True)
class NtfsMount:
    """A mounted NTFS volume."""

    mountpoint: Path
    device: str
    image: Path
    options: str


def ntfs_available() -> str | None:
    """None when an ntfs-3g volume can be mounted here, else why not."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("needs root (losetup, mount)")
    if not os.path.exists("/dev/fuse"):
        reasons.append("/dev/fuse is missing")
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        reasons.append("no loop devices (/dev/loop-control)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        reasons.append("missing " + ", ".join(missing) + " (Debian packages ntfs-3g, mount)")
    return "; ".join(reasons) or None


def fs_type(path: Path) -> str | None:
    """Type of the file system holding ``path`` per /proc/mounts (longest match)."""
    target = os.path.realpath(path)
    matches = [
        (len(mountpoint), fstype)
        for _source, mountpoint, fstype in _mounts()
        if target == mountpoint or target.startswith(mountpoint.rstrip("/") + "/")
    ]
    # The last of equally long matches is the mount on top.
    return max(matches, key=lambda m: m[0])[1] if matches else None


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
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cleanup_stale(tmp_dir)
    image = tmp_dir / IMAGE_NAME
    mountpoint = tmp_dir / "mnt"
    mountpoint.mkdir(exist_ok=True)
    _owner_file(image).write_text(str(os.getpid()))
    with image.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    device: str | None = None
    mounted = False
    try:
        device = _check(["losetup", "--find", "--show", str(image)]).strip()
        # On the loop device mkntfs reads the sector size itself (on a plain
        # file it prints geometry warnings); -Q skips zeroing, -F is harmless.
        _check(["mkntfs", "-F", "-Q", "-q", "-L", "finalcopy-test", device])
        cmd = ["ntfs-3g", device, str(mountpoint)]
        if options:
            cmd[1:1] = ["-o", options]
        _check(cmd)
        mounted = True
        _wait_mounted(mountpoint)
        yield NtfsMount(mountpoint=mountpoint, device=device, image=image, options=options)
    finally:
        if mounted:
            _unmount(mountpoint)
        if device is not None:
            _detach(device)
        image.unlink(missing_ok=True)
        _owner_file(image).unlink(missing_ok=True)


def cleanup_stale(root: Path) -> list[str]:
    """Unmount, detach and delete test images under ``root`` whose owner is gone.

    Returns the loop devices it detached. Images of live processes (another
    pytest worker, say) are left alone.
    """
    if shutil.which("losetup") is None:
        return []
    root_real = os.path.realpath(root)
    detached: list[str] = []
    for device, backing in _loop_devices():
        backing = backing.removesuffix(" (deleted)")
        if os.path.basename(backing) != IMAGE_NAME:
            continue
        if not (backing + "/").startswith(root_real.rstrip("/") + "/"):
            continue
        if _owner_alive(Path(backing)):
            continue
        for source, mountpoint, _fstype in _mounts():
            if source == device:
                _unmount(Path(mountpoint))
        _detach(device)
        detached.append(device)
        Path(backing).unlink(missing_ok=True)
        _owner_file(Path(backing)).unlink(missing_ok=True)
    return detached


def _owner_file(image: Path) -> Path:
    return image.with_name(image.name + OWNER_SUFFIX)


def _owner_alive(image: Path) -> bool:
    try:
        pid = int(_owner_file(image).read_text().strip())
    except (OSError, ValueError):
        return False  # no record: made by a run that did not finish setting up
    return pid == os.getpid() or process_alive(pid)


def _loop_devices() -> list[tuple[str, str]]:
    proc = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    rows = json.loads(proc.stdout).get("loopdevices", [])
    return [(row["name"], row.get("back-file") or "") for row in rows]


def _mounts() -> list[tuple[str, str, str]]:
    result: list[tuple[str, str, str]] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            result.append((_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return result


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _wait_mounted(mountpoint: Path) -> None:
    target = os.path.realpath(mountpoint)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not any(m == target and t == "fuseblk" for _s, m, t in _mounts()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"ntfs-3g returned but {target} is not a fuseblk mount")
        time.sleep(0.05)


def _unmount(mountpoint: Path) -> None:
    """umount; when busy, wait a little and retry, then detach lazily."""
    for _attempt in range(10):
        proc = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 or "not mounted" in proc.stderr:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def _detach(device: str) -> None:
    # A busy loop device is only marked for auto-clear by the kernel; retry
    # while ntfs-3g is still letting go of it.
    for _attempt in range(10):
        proc = subprocess.run(
            ["losetup", "-d", device], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 or "No such device" in proc.stderr:
            return
        time.sleep(0.2)


def _check(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout
