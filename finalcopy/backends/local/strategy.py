"""Which local backend a path gets, and why: file-system type, then a probe.

On NTFS, FAT or exFAT ``chmod``/``utime`` fail or change nothing, so
``shutil.copy2`` and ``rsync -a`` print a warning per file or fail (which is
why the seed chained rsync → cp → Python). Here the choice is made once,
before copying:

1. ``--metadata posix`` / ``none`` force it;
2. the file system type of the nearest existing ancestor (mount table, else
   ``statfs``) in :data:`NO_METADATA_FS_TYPES` → no-metadata;
3. otherwise a probe file in that ancestor: chmod and utime refused, or
   ignored (the mode or time does not change) → no-metadata;
4. otherwise the POSIX backend.

The probes create their scratch files exclusively and change them through
their descriptor only (see :mod:`.folders`), so a link planted at a probe's
name is never followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread

from finalcopy.backends.base import Backend, temp_name
from finalcopy.backends.local.backend import LocalBackend
from finalcopy.backends.local.durability import batch_sync_usable
from finalcopy.backends.local.folders import create_exclusive, create_temp_file
from finalcopy.backends.local.nometadata import NoMetadataBackend
from finalcopy.backends.options import DestinationOptions
from finalcopy.choices import MetadataMode
from finalcopy.paths import is_inside, nearest_existing

__all__ = [
    "MEMORY_FS_TYPES",
    "NO_METADATA_FS_TYPES",
    "Strategy",
    "choose_strategy",
    "filesystem_type",
    "open_local_backend",
    "probe_metadata",
    "probe_symlinks",
]

log = logging.getLogger(__name__)

NO_METADATA_FS_TYPES = frozenset(
    {
        "fuseblk",  # ntfs-3g and exfat-fuse on a block device
        "fuse.ntfs-3g",
        "fuse.lowntfs-3g",
        "fuse.exfat",
        "ntfs",
        "ntfs3",
        "vfat",
        "msdos",
        "exfat",
    }
)

#: File systems in memory: no device under the page cache, so nothing for a read-back
#: to bypass (``drop_cache`` would be a system call per file that does nothing).
MEMORY_FS_TYPES = frozenset({"tmpfs", "ramfs"})

# statfs(2) magic numbers, for when no mount table is readable. FUSE is
# ambiguous (sshfs is FUSE too), so it only names the type and the probe decides.
_STATFS_MAGIC = {
    0x65735546: "fuse",
    0x4D44: "msdos",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
}

# A time every file system above can hold exactly: whole, even seconds (FAT
# keeps 2 s steps), after 1980 (FAT's epoch).
_PROBE_MTIME_NS = 1_600_000_000 * 1_000_000_000
# Two modes, so a mount whose fixed mode happens to equal one is still caught.
_PROBE_MODES = (0o640, 0o604)
_NO_METADATA = "no-metadata: content only, chmod/utime never called"
_BATCH_SYNC = "; the files of a batch made durable together (syncfs)"


@dataclass(frozen=True)
class Strategy:
    """How a local destination is written, and why."""

    posix_metadata: bool
    reason: str


def _unescape_mount_field(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo octal escapes.
    raw = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        octal = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(octal) == 3 and all(0x30 <= b <= 0x37 for b in octal):
            out.append(int(octal, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _from_mountinfo(target: Path) -> tuple[str, Path] | None:
    """Type and mount point of ``target``'s file system: same device first, then longest prefix."""
    try:
        lines = Path("/proc/self/mountinfo").read_text("utf-8", "surrogateescape").splitlines()
        dev = os.stat(target).st_dev
    except OSError:
        return None
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    by_device: list[tuple[str, Path]] = []
    by_prefix: list[tuple[str, Path]] = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if not sep or len(fields) < 5 or not after:
            continue
        mount_point = Path(_unescape_mount_field(fields[4]))
        if not is_inside(target, mount_point):
            continue
        entry = (after[0], mount_point)
        by_prefix.append(entry)
        if fields[2] == wanted:
            by_device.append(entry)
    # Later lines are mounted on top of earlier ones: the last, deepest one wins.
    for candidates in (by_device, by_prefix):
        if candidates:
            return max(reversed(candidates), key=lambda e: len(e[1].parts))
    return None


def _from_statfs(target: Path) -> str | None:
    """File system type from ``statfs(2)``'s magic number (Linux, glibc/musl)."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    buffer = ctypes.create_string_buffer(512)  # larger than any struct statfs
    if libc.statfs(os.fsencode(target), buffer) != 0:
        return None
    magic = ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF  # f_type comes first
    return _STATFS_MAGIC.get(magic)


def filesystem_type(path: Path) -> tuple[str, Path]:
    """File system type and mount point of the nearest existing ancestor of ``path``.

    ``("unknown", Path("/"))`` when neither the mount table nor ``statfs`` tells.
    """
    target = nearest_existing(path).resolve()
    found = _from_mountinfo(target)
    if found is not None:
        return found
    return _from_statfs(target) or "unknown", target


@contextlib.contextmanager
def _opened(directory: Path) -> Iterator[int]:
    """A descriptor of ``directory``, for probe files made and removed relative to it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def probe_metadata(directory: Path) -> str | None:
    """Try chmod and utime on a scratch file in ``directory``; why they are unusable, or None.

    None also when the scratch file cannot be created: ``prepare`` then says
    the destination is not writable, which is the clearer message. The
    scratch file is created exclusively and changed through its descriptor
    only, so a link planted at its name or swapped in later is never followed.
    """
    name = temp_name(f"metadata-probe-{os.getpid()}")
    try:
        with _opened(directory) as folder:
            fd = create_temp_file(folder, name, 0o600)
            try:
                return _probe_descriptor(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
    except OSError:
        return None  # no scratch file: no conclusion, keep POSIX


def _probe_descriptor(fd: int) -> str | None:
    """Why chmod and utime cannot be trusted on the open scratch file ``fd``, or None."""
    for mode in _PROBE_MODES:
        try:
            os.fchmod(fd, mode)
        except OSError:
            return "chmod is refused there"
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            return "chmod is silently ignored there"
    try:
        os.utime(fd, ns=(_PROBE_MTIME_NS, _PROBE_MTIME_NS))
    except OSError:
        return "utime is refused there"
    if os.fstat(fd).st_mtime_ns != _PROBE_MTIME_NS:
        return "utime is silently ignored there"
    return None


def probe_symlinks(directory: Path) -> bool:
    """Whether a symbolic link can be created in ``directory`` (FAT and exFAT: no)."""
    name = temp_name(f"symlink-probe-{os.getpid()}")
    try:
        with _opened(directory) as folder:
            make = partial(os.symlink, "finalcopy-symlink-probe", name, dir_fd=folder)
            create_exclusive(folder, name, make)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder)
    except OSError:
        return False
    return True


def choose_strategy(
    path: Path,
    metadata: MetadataMode = "auto",
    *,
    use_fs_type: bool = True,
    fs: tuple[str, Path] | None = None,
) -> Strategy:
    """Decide whether POSIX metadata is kept at ``path``, and say why.

    ``use_fs_type=False`` skips the file-system-type shortcut so that the
    probe alone decides (tests use it to prove the probe on a real mount).
    ``fs`` is :func:`filesystem_type` of ``path`` when the caller has it.
    """
    if metadata == "posix":
        return Strategy(True, "local POSIX: mode and mtime preserved (--metadata posix)")
    if metadata == "none":
        return Strategy(False, f"{_NO_METADATA} (--metadata none)")
    fs_type, mount_point = fs or filesystem_type(path)
    if use_fs_type and fs_type in NO_METADATA_FS_TYPES:
        return Strategy(False, f"{_NO_METADATA} ({mount_point} is {fs_type})")
    ancestor = nearest_existing(path)
    while not ancestor.is_dir() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = probe_metadata(ancestor)
    if problem:
        return Strategy(False, f"{_NO_METADATA} ({mount_point} is {fs_type}; probe: {problem})")
    return Strategy(True, f"local POSIX: mode and mtime preserved ({mount_point} is {fs_type})")


def _strategy_for(path: Path, metadata: MetadataMode) -> tuple[Strategy, bool, str]:
    """The strategy, whether links can be made, and the file system's type."""
    fs = filesystem_type(path)  # read once: the mount table is parsed for it
    strategy = choose_strategy(path, metadata, fs=fs)
    ancestor = nearest_existing(path)
    symlinks = strategy.posix_metadata or not ancestor.is_dir() or probe_symlinks(ancestor)
    return strategy, symlinks, fs[0]


async def open_local_backend(path: Path, options: DestinationOptions) -> Backend:
    """Open a local destination with the strategy its file system supports."""
    strategy, symlinks, fs_type = await anyio.to_thread.run_sync(
        _strategy_for, path, options.metadata
    )
    backend: LocalBackend
    if strategy.posix_metadata:
        batch_sync = batch_sync_usable(fs_type)
        backend = LocalBackend(
            path,
            drop_cache=fs_type not in MEMORY_FS_TYPES,
            batch_sync=batch_sync,
            helpers=options.helpers,
        )
        backend.strategy = strategy.reason + (_BATCH_SYNC if batch_sync else "")
    else:
        backend = NoMetadataBackend(
            path, reason=strategy.reason, names=options.ntfs_names, symlinks=symlinks
        )
    log.info("Destination strategy: %s", backend.strategy)
    return backend
