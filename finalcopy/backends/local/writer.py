"""One file written on a local disk: temporary name, fsync, rename over the final name.

The temporary file and its final name are both reached through their
folder's descriptor (:mod:`.folders`), so a link planted at either name is
replaced, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from finalcopy.backends.base import TempWriter, temp_name
from finalcopy.backends.local.durability import start_writeback
from finalcopy.backends.local.folders import Folders, create_temp_file, split_path
from finalcopy.errors import DestinationError, os_errors

#: What ``rename`` says when a folder holds the final name.
_FOLDER_IN_THE_WAY = (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)

ThreadRunner = Callable[..., Awaitable[Any]]
"""Runs a blocking function in a worker thread: ``await run(func, *args)``."""


def set_fd_metadata(fd: int, mode: int | None, mtime_ns: int | None) -> None:
    """Give the file or folder open at ``fd`` the permission bits of ``mode`` and ``mtime_ns``."""
    if mode is not None:
        os.fchmod(fd, stat.S_IMODE(mode))
    if mtime_ns is not None:
        os.utime(fd, ns=(mtime_ns, mtime_ns))


def write_all(fd: int, data: memoryview | bytes) -> None:
    """Write all of ``data`` to ``fd``, however many ``write`` calls it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_blocks(fd: int, read_block: Callable[[int], memoryview], size: int) -> None:
    """Write what ``read_block(size)`` returns, a ``write`` per block, until it returns nothing."""
    while block := read_block(size):
        write_all(fd, block)


def write_blocks_early(
    fd: int, read_block: Callable[[int], memoryview], size: int, step: int
) -> None:
    """:func:`write_blocks`, and every ``step`` bytes the range just written sent to the device.

    So that the device writes while the rest of the file is read, rather
    than during its ``fsync`` (see :func:`.durability.start_writeback`). A
    file shorter than ``step`` costs no extra system call; after a refused
    hint, the rest of the file gets none either.
    """
    written = started = 0
    while block := read_block(size):
        write_all(fd, block)
        written += len(block)
        if written - started >= step:
            if not start_writeback(fd, started, written - started):
                write_blocks(fd, read_block, size)
                return
            started = written


class LocalTempWriter(TempWriter):
    """A temporary file beside its final name, both reached through their folder's descriptor.

    Usable from a worker thread (the ``*_blocking`` methods) or the event
    loop (through ``run``). ``folders`` is the caller's (a batch's) and must
    not move to another folder before the writer is committed or aborted;
    with ``owned`` the writer closes it then. ``temp`` is the engine's
    temporary path (same folder) or, when empty, :func:`temp_name` of the
    final name. ``where`` names the final file in messages. The file is
    created ``create_mode`` (less the umask): private until commit applies
    the source's mode, unless none will be applied.
    """

    def __init__(
        self,
        folders: Folders,
        path: str,
        temp: str = "",
        *,
        where: str,
        posix_metadata: bool,
        run: ThreadRunner | None = None,
        owned: bool = False,
        create_mode: int = 0o600,
    ) -> None:
        self.where = where
        self.posix_metadata = posix_metadata
        self._run = run
        self._owned = folders if owned else None
        self._pending = False
        """The temporary file exists and is ours to remove."""
        self.fd = -1
        try:
            folder, self.name = split_path(path)
            self.tmp = temp.rpartition("/")[2] if temp else temp_name(self.name)
            with os_errors(where, "create"):
                self.dir_fd = folders.get(folder)
                self.fd = create_temp_file(self.dir_fd, self.tmp, create_mode)
        except BaseException:
            self._release()
            raise
        self._pending = True

    async def write(self, data: bytes | memoryview) -> None:
        assert self._run is not None, "a writer opened in a thread writes with fill"
        await self._run(self.write_blocking, data)

    def write_blocking(self, data: bytes | memoryview) -> None:
        """Append ``data``; a failure aborts the writer."""
        self.fill(partial(write_all, data=data))

    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        assert self._run is not None, "a writer opened in a thread commits with commit_blocking"
        mtime: int = await self._run(self.commit_blocking, mode, mtime_ns)
        return mtime

    def fill(self, fill: Callable[[int], None]) -> None:
        """Write with ``fill(fd)``; a failure aborts the writer."""
        try:
            with os_errors(self.where, "write"):
                fill(self.fd)
        except BaseException:
            self.abort_blocking()
            raise

    def commit_blocking(self, mode: int | None, mtime_ns: int | None) -> int:
        """Metadata (where kept), fsync, rename into place; returns the final mtime."""
        mtime = self.seal_blocking(mode, mtime_ns, sync=True)
        self.publish_blocking()
        return mtime

    def seal_blocking(self, mode: int | None, mtime_ns: int | None, *, sync: bool) -> int:
        """Metadata (where kept), ``fsync`` with ``sync``, close; returns the file's mtime.

        Without ``sync`` the caller makes the file durable some other way
        (``syncfs`` for a batch, see :mod:`.durability`) before
        :meth:`publish_blocking`. A failure aborts the writer.
        """
        try:
            with os_errors(self.where, "write"):
                if self.posix_metadata:
                    set_fd_metadata(self.fd, mode, mtime_ns)
                if sync:
                    os.fsync(self.fd)
                mtime = os.fstat(self.fd).st_mtime_ns
                fd, self.fd = self.fd, -1
                os.close(fd)
        except BaseException:
            self.abort_blocking()
            raise
        return mtime

    def publish_blocking(self) -> None:
        """Rename the sealed, durable temporary file over the final name; a failure aborts."""
        try:
            with os_errors(self.where, "rename into place"):
                self._rename_into_place()
        except BaseException:
            self.abort_blocking()
            raise
        self._pending = False
        self._release()

    def _rename_into_place(self) -> None:
        try:
            # Renames the entry itself: a link at the final name is replaced, not followed.
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno in _FOLDER_IN_THE_WAY:
                raise DestinationError(
                    f"cannot replace '{self.where}': a folder of that name is in the way"
                ) from None
            raise

    async def abort(self) -> None:
        self.abort_blocking()

    def abort_blocking(self) -> None:
        """Close and unlink the temporary file; never raises."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self._pending:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            self._pending = False
        self._release()

    def _release(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
