"""Sparse images on loop devices, mounted with a FUSE driver: shared by ntfs.py and exfat.py.

Tests need the real drivers (ntfs-3g, exfat-fuse) with their real quirks, so
each volume is a sparse image file, attached with ``losetup``, formatted,
mounted, and finally unmounted, detached and deleted. Each image records the
pid of the process that made it (``<image>.owner``), so a later run can
unmount and detach what a killed run left behind without touching the
volumes of live processes (another pytest worker, say).

A file system is declared once as a :class:`Driver` (``ntfs.NTFS``,
``exfat.EXFAT``); everything else here is shared. No pytest in this module:
the benchmarks mount their NTFS volume with it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import process_alive

__all__ = [
    "Driver",
    "LoopMount",
    "cleanup_stale",
    "fs_type",
    "mounted_image",
    "mounts",
    "scratch_dir",
    "sweep_scratch_dirs",
    "unavailable",
]

OWNER_SUFFIX = ".owner"
MOUNT_TIMEOUT = 10.0
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class LoopMount:
    """A mounted volume: its mount point, loop device, image file and mount options."""

    mountpoint: Path
    device: str
    image: Path
    options: str


@dataclass(frozen=True)
class Driver:
    """One file system on a loop device: how to format and mount it, what it shows as.

    A FUSE driver (ntfs-3g, exfat-fuse) or, with ``mount_program="mount"``, the kernel's.

    The volume is formatted with ``*mkfs device`` and mounted with
    ``mount_program [-o options] device mountpoint``; it must then show in
    /proc/self/mountinfo with a type in ``fs_types``, so a kernel driver
    taking over is an error, not a silent change of what is tested.
    """

    name: str
    mkfs: tuple[str, ...]
    mount_program: str
    fs_types: tuple[str, ...]
    #: Debian packages that hold the programs, for the "missing" message.
    packages: str
    size_mib: int

    @property
    def image_name(self) -> str:
        """File name of the sparse image (``finalcopy-ntfs.img``)."""
        return f"finalcopy-{self.name.lower()}.img"

    @property
    def scratch_prefix(self) -> str:
        """Prefix of the per-volume scratch folders (``finalcopy-ntfs-<pid>-…``)."""
        return f"finalcopy-{self.name.lower()}-"

    def unavailable(self) -> str | None:
        """None when such a volume can be mounted here, else why not."""
        tools = ("losetup", self.mkfs[0], self.mount_program, "umount")
        return unavailable(tools, self.packages, fuse=self.mount_program != "mount")

    @contextlib.contextmanager
    def mounted(
        self,
        tmp_dir: Path,
        size_mib: int | None = None,
        options: str = "",
        *,
        direct_io: bool = False,
    ) -> Iterator[LoopMount]:
        """Make, mount and finally remove a volume in ``tmp_dir`` (see :func:`mounted_image`).

        ``options`` go to the driver's ``-o`` (e.g. ``"uid=1000,gid=1000"``).
        """
        reason = self.unavailable()
        if reason is not None:
            raise RuntimeError(f"cannot mount {self.name}: {reason}")

        def mount(device: str, mountpoint: Path) -> list[str]:
            extra = ["-o", options] if options else []
            return [self.mount_program, *extra, device, str(mountpoint)]

        with mounted_image(
            tmp_dir,
            image_name=self.image_name,
            size_mib=size_mib or self.size_mib,
            make_fs=lambda device: [*self.mkfs, device],
            mount=mount,
            fs_types=self.fs_types,
            options=options,
            direct_io=direct_io,
        ) as volume:
            yield volume

    def prepare_base(self, base: Path) -> None:
        """Unmount, detach and remove what killed runs left in ``base`` (never a live volume)."""
        cleanup_stale(base, self.image_name)
        sweep_scratch_dirs(base, self.scratch_prefix)

    @contextlib.contextmanager
    def volume(self, base: Path, options: str = "") -> Iterator[LoopMount]:
        """A fresh volume in its own scratch folder under ``base``, all removed after."""
        with (
            scratch_dir(base, self.scratch_prefix) as tmp_dir,
            self.mounted(tmp_dir, options=options) as mount,
        ):
            yield mount


def unavailable(tools: Sequence[str], packages: str, *, fuse: bool = True) -> str | None:
    """None when a volume on a loop device can be mounted with ``tools``, else why not."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("needs root (losetup, mount)")
    if fuse and not os.path.exists("/dev/fuse"):
        reasons.append("/dev/fuse is missing")
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        reasons.append("no loop devices (/dev/loop-control)")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        reasons.append("missing " + ", ".join(missing) + f" (Debian packages {packages})")
    return "; ".join(reasons) or None


def mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, type) of every mount, from /proc/self/mountinfo, in mount order.

    The type is the kernel's: ``fuseblk`` / ``fuse.<subtype>`` for FUSE
    drivers, ``exfat`` / ``ntfs3`` for in-kernel ones.
    """
    result: list[tuple[str, str, str]] = []
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split(" ")
        # id parent major:minor root mountpoint options [optional...] - type source super
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        result.append((_unescape(fields[sep + 2]), _unescape(fields[4]), fields[sep + 1]))
    return result


def fs_type(path: Path) -> str | None:
    """Type of the file system holding ``path`` (longest mount point that contains it)."""
    target = os.path.realpath(path)
    matches = [
        (len(mountpoint), fstype)
        for _source, mountpoint, fstype in mounts()
        if target == mountpoint or target.startswith(mountpoint.rstrip("/") + "/")
    ]
    # The last of equally long matches is the mount on top.
    return max(matches, key=lambda m: m[0])[1] if matches else None


@contextlib.contextmanager
def mounted_image(
    tmp_dir: Path,
    *,
    image_name: str,
    size_mib: int,
    make_fs: Callable[[str], Sequence[str]],
    mount: Callable[[str, Path], Sequence[str]],
    fs_types: Collection[str],
    options: str = "",
    direct_io: bool = False,
) -> Iterator[LoopMount]:
    """Make ``tmp_dir/image_name``, format and mount it on ``tmp_dir/mnt``; undo it all after.

    With ``direct_io`` the loop device reads and writes the image with
    ``O_DIRECT``: the volume's write-back then reaches the disk under the
    image, as a real disk's would, instead of becoming a copy into the
    image file's page cache (a second cache, and write-back for free).

    ``make_fs(device)`` and ``mount(device, mountpoint)`` give the commands;
    the mount must show up in /proc/self/mountinfo with a type in
    ``fs_types`` (so a kernel driver taking over is an error, not a silent
    change of what is tested). Unmounting, detaching and deleting the image
    happen even when the body raises; the image is sparse, so only written
    data takes disk space.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cleanup_stale(tmp_dir, image_name)
    image = tmp_dir / image_name
    mountpoint = tmp_dir / "mnt"
    mountpoint.mkdir(exist_ok=True)
    _owner_file(image).write_text(str(os.getpid()))
    with image.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    device: str | None = None
    mounted = False
    try:
        direct = ["--direct-io=on"] if direct_io else []
        device = _check(["losetup", "--find", "--show", *direct, str(image)]).strip()
        _check(list(make_fs(device)))
        _check(list(mount(device, mountpoint)))
        mounted = True
        _wait_mounted(mountpoint, fs_types)
        yield LoopMount(mountpoint=mountpoint, device=device, image=image, options=options)
    finally:
        if mounted:
            _unmount(mountpoint)
        if device is not None:
            _detach(device)
        image.unlink(missing_ok=True)
        _owner_file(image).unlink(missing_ok=True)


def cleanup_stale(root: Path, image_name: str) -> list[str]:
    """Unmount, detach and delete images named ``image_name`` under ``root`` whose owner is gone.

    Returns the loop devices it detached. Images of live processes are left alone.
    """
    if shutil.which("losetup") is None:
        return []
    root_real = os.path.realpath(root)
    detached: list[str] = []
    for device, backing in _loop_devices():
        backing = backing.removesuffix(" (deleted)")
        if os.path.basename(backing) != image_name:
            continue
        if not (backing + "/").startswith(root_real.rstrip("/") + "/"):
            continue
        if _owner_alive(Path(backing)):
            continue
        for source, mountpoint, _fstype in mounts():
            if source == device:
                _unmount(Path(mountpoint))
        _detach(device)
        detached.append(device)
        Path(backing).unlink(missing_ok=True)
        _owner_file(Path(backing)).unlink(missing_ok=True)
    return detached


def sweep_scratch_dirs(base: Path, prefix: str) -> None:
    """Remove ``base/<prefix><pid>-*`` folders of dead processes (never a live mount)."""
    for stale in base.glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix).partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)) and not os.path.ismount(stale / "mnt"):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(base: Path, prefix: str) -> Iterator[Path]:
    """A 0755 folder ``base/<prefix><pid>-XXXX``, removed after (unless still mounted)."""
    # The pid in the name tells a later run whether the folder is abandoned.
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    path.chmod(0o755)
    try:
        yield path
    finally:
        # Never rmtree into a volume that failed to unmount.
        if not os.path.ismount(path / "mnt"):
            shutil.rmtree(path, ignore_errors=True)


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


def _unescape(field: str) -> str:
    """The mount tables write space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _wait_mounted(mountpoint: Path, fs_types: Collection[str]) -> None:
    target = os.path.realpath(mountpoint)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while True:
        found = [t for _s, m, t in mounts() if m == target]
        if found and found[-1] in fs_types:
            return
        if time.monotonic() > deadline:
            seen = found[-1] if found else "not mounted"
            raise RuntimeError(
                f"{target} should be a {' or '.join(sorted(fs_types))} mount, found: {seen}"
            )
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
    # while the FUSE daemon is still letting go of it.
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
