"""Reaching entries below a local root without ever following a symbolic link.

finalcopy often runs as root against storage that others can write, and
whoever can write into the destination can plant symbolic links there. So
nothing below the root is reached by path name:

* every folder is opened relative to its parent's descriptor with
  ``O_NOFOLLOW | O_DIRECTORY`` (:class:`Folders`), and every file operation
  is relative to its folder's descriptor, never following a link: a link
  where a folder is expected is refused with the path named, never traversed;
* temporary files are created ``O_EXCL | O_NOFOLLOW`` (:func:`create_exclusive`):
  whatever is already at a temporary name is unlinked, never opened.

The root itself is the operator's choice (``/mnt/nas -> /srv/nas``) and is
followed; only the names below it are untrusted.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from finalcopy.errors import DestinationError, link_refused

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a file's name must not hang the read; it is
# then refused as not a regular file. Regular files ignore the flag.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Names that would not stay in their folder (``""``: an absolute path or ``a//b``).
_NOT_NAMES = frozenset({"", ".", ".."})

_T = TypeVar("_T")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def split_path(path: str) -> tuple[str, str]:
    """``(folder, name)`` of a path below the root; refuses a name that would leave its folder.

    Folder names are checked by :meth:`Folders.get` as it opens them.
    """
    folder, slash, name = path.rpartition("/")
    if name in _NOT_NAMES or (slash and not folder):
        raise DestinationError(f"refusing the path '{path}': it does not name an entry below it")
    return folder, name


def create_exclusive(dir_fd: int, name: str, create: Callable[[], _T]) -> _T:
    """Run ``create``, which makes entry ``name`` in folder ``dir_fd`` exclusively.

    ``name`` is a temporary name, finalcopy's own: an entry already there is
    an interrupted run's leftover (or was planted) and is unlinked, which never
    follows a link, then ``create`` runs once more. Nothing there is ever
    opened, so a link or a hard link at that name cannot carry the write
    elsewhere. A folder there is refused (OSError EISDIR naming it).
    """
    try:
        return create()
    except FileExistsError:
        pass
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to clear
        if stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise IsADirectoryError(
                errno.EISDIR, f"a folder is in the way at its temporary name '{name}'"
            )
        os.unlink(name, dir_fd=dir_fd)
    return create()


def create_temp_file(dir_fd: int, name: str, mode: int) -> int:
    """A new empty file ``name`` in folder ``dir_fd``, open for writing; see create_exclusive."""
    return create_exclusive(
        dir_fd, name, partial(os.open, name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    )


def open_regular_fd(dir_fd: int, name: str) -> tuple[int, int]:
    """File ``name`` of folder ``dir_fd`` opened for reading, never through a link, and its size.

    A plain descriptor (the caller closes it): a file object would cost one
    more ``fstat`` per file. Anything but a regular file is refused (OSError EINVAL).
    """
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def open_regular(dir_fd: int, name: str) -> tuple[io.FileIO, int]:
    """As :func:`open_regular_fd`, as a file object."""
    fd, size = open_regular_fd(dir_fd, name)
    return io.FileIO(fd, "rb"), size


class Folders:
    """Descriptors of folders below a root, each opened without following links.

    Consecutive files of a batch mostly share a folder, so the descriptors of
    the last folder reached and of its ancestors (a chain from the root) are
    kept and reused by the next :meth:`get`; a walk's depth bounds how many
    are open. :meth:`close` releases them. Folder names are checked here: a
    name that would leave its folder (``..``) or a symbolic link is refused.
    """

    def __init__(self, root: str, describe: Callable[[str], str]) -> None:
        self.root = root
        self.describe = describe
        """How a path below the root is named in messages (the backend's ``describe``)."""
        self._fds: list[int] = []
        """``_fds[0]`` is the root; ``_fds[i]`` the folder ``_names[:i]``."""
        self._names: list[str] = []
        self._folder: str | None = None
        """The folder the chain ends at, while it is complete: the common case, one compare."""

    def __enter__(self) -> Folders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every descriptor of the chain."""
        self._folder = None
        self._keep(0)

    def get(self, folder: str, *, create: bool = False) -> int:
        """Descriptor of ``folder`` (``""``: the root), valid until the next call.

        With ``create``, missing folders (the root included) are made.
        Raises ``OSError`` as the system reports it (missing, not a folder) and
        :class:`~finalcopy.errors.DestinationError` for a link or a bad name.
        """
        if folder == self._folder:
            return self._fds[-1]
        self._folder = None
        names = folder.split("/") if folder else []
        if not self._fds:
            self._fds.append(self._open_root(create))
        same = 0
        shared = min(len(names), len(self._names))
        while same < shared and names[same] == self._names[same]:
            same += 1
        self._keep(same + 1)
        for name in names[same:]:
            self._fds.append(self._open_child(name, create))
            self._names.append(name)
        self._folder = folder
        return self._fds[-1]

    def _keep(self, depth: int) -> None:
        """Close the descriptors past the first ``depth`` of the chain."""
        while len(self._fds) > depth:
            os.close(self._fds.pop())
        del self._names[max(depth - 1, 0) :]

    def _open_root(self, create: bool) -> int:
        try:
            return os.open(self.root, _ROOT_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
        os.makedirs(self.root, exist_ok=True)
        return os.open(self.root, _ROOT_FLAGS)

    def _open_child(self, name: str, create: bool) -> int:
        """Open (with ``create``: make first) folder ``name`` in the chain's last folder."""
        path = "/".join([*self._names, name])
        if name in _NOT_NAMES:
            raise DestinationError(
                f"refusing the path '{path}': it does not name a folder below it"
            )
        parent = self._fds[-1]
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=parent)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            # Linux says ENOTDIR for a link opened O_DIRECTORY | O_NOFOLLOW, so look.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(parent, name):
                raise link_refused(self.describe(path)) from None
            raise
