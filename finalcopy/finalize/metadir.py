"""finalcopy's own folder in the work directory, ``WORK/.finalcopy/``, never reached through a link.

Whoever can write into the work directory could plant ``.finalcopy/journal``
as a symbolic link to ``/etc``: opening ``journal/P.json`` by path would then
write there, as root. So every folder below the work directory is opened
relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY`` (created
with ``mkdir`` when missing) and every file relative to its folder's
descriptor with ``O_NOFOLLOW``; temporary files are created ``O_EXCL``
(:mod:`finalcopy.smallfiles` reads and writes the files of a folder opened
here). A link where a folder or file is expected is refused with a clear
message. The work directory itself is the operator's choice and may be a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from finalcopy.errors import FinalcopyError, UnsafeMetadata

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _refusal(path: Path, exc: OSError) -> FinalcopyError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return UnsafeMetadata(
            f"'{path}' is a symbolic link or not a folder; finalcopy keeps its own files "
            "there and refuses to follow it (remove it and run again)"
        )
    return FinalcopyError(f"cannot open '{path}': {exc.strerror or exc}")


def open_private_dir(base: Path, *parts: str) -> int:
    """Descriptor of ``base/parts...``, each part created if missing and never a link.

    The caller closes it. Raises :class:`UnsafeMetadata` for a link on the way.
    """
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise FinalcopyError(f"cannot open '{base}': {exc.strerror or exc}") from None
    path = base
    try:
        for part in parts:
            path = path / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise _refusal(path, exc) from None
    return fd


@contextlib.contextmanager
def private_dir(base: Path, *parts: str) -> Iterator[int]:
    """:func:`open_private_dir` as a context manager."""
    fd = open_private_dir(base, *parts)
    try:
        yield fd
    finally:
        os.close(fd)


def check_private_dir(base: Path, *parts: str) -> Path:
    """Create or check ``base/parts...`` as real folders; returns the path.

    For code that must work with paths (the archive staging folder): the
    check runs right before use.
    """
    os.close(open_private_dir(base, *parts))
    return base.joinpath(*parts)
