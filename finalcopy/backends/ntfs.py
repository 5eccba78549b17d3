"""Choose between the POSIX and the no-metadata strategy for a local destination.

On fuseblk/NTFS (and vfat, exfat) chmod and utime fail with EPERM or are
silently ignored, so the no-metadata mode never calls them. The choice comes
from the file system type of the nearest existing ancestor, then from a probe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

import anyio.to_thread

from finalcopy.backends.base import Backend, temp_name
from finalcopy.backends.local import LocalBackend
from finalcopy.backends.registry import DestinationOptions

log = logging.getLogger(__name__)

NO_METADATA_FS_TYPES = frozenset({"fuseblk", "ntfs", "ntfs3", "vfat", "exfat", "msdos"})


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def filesystem_type(path: Path) -> tuple[str, Path]:
    """File system type and mount point of the nearest existing ancestor of ``path``."""
    target = path.absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best: tuple[str, Path] = ("unknown", Path("/"))
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    best_len = -1
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(_unescape_mount_field(fields[1]))
        if (target == mount_point or mount_point in target.parents) and len(
            mount_point.parts
        ) >= best_len:
            best_len = len(mount_point.parts)
            best = (fields[2], mount_point)
    return best


def probe_metadata(directory: Path) -> str | None:
    """Try chmod and utime on a scratch file; return why metadata is unusable, or None."""
    probe = directory / temp_name(f"metadata-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
    except OSError:
        return None  # unwritable: prepare() will say so with a clearer message
    try:
        try:
            os.chmod(probe, 0o640)
            os.utime(probe, ns=(1_000_000_000, 1_000_000_000))
        except OSError as exc:
            return f"chmod/utime fail there ({exc.strerror})"
        st = os.stat(probe)
        if stat.S_IMODE(st.st_mode) != 0o640:
            return "chmod is silently ignored there"
        if st.st_mtime_ns != 1_000_000_000:
            return "utime is silently ignored there"
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def choose_strategy(path: Path, metadata: str) -> tuple[bool, str]:
    """Decide whether POSIX metadata is kept at ``path``; returns (kept, reason)."""
    if metadata == "posix":
        return True, "local POSIX: mode and mtime preserved (forced by --metadata posix)"
    if metadata == "none":
        return False, "no-metadata: content only (forced by --metadata none)"
    fs_type, mount_point = filesystem_type(path)
    if fs_type in NO_METADATA_FS_TYPES:
        return False, (
            f"no-metadata: content only, chmod/utime never called ({mount_point} is {fs_type})"
        )
    ancestor = path.absolute()
    while not ancestor.is_dir() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    reason = probe_metadata(ancestor)
    if reason:
        return False, f"no-metadata: content only, chmod/utime never called ({reason})"
    return True, f"local POSIX: mode and mtime preserved ({mount_point} is {fs_type})"


async def open_local_backend(path: Path, options: DestinationOptions) -> Backend:
    """Open a local destination with the strategy its file system supports."""
    kept, reason = await anyio.to_thread.run_sync(choose_strategy, path, options.metadata)
    backend = LocalBackend(path, posix_metadata=kept)
    backend.strategy = reason
    log.info("Destination strategy: %s", reason)
    return backend
