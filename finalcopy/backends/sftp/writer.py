"""Writing one file over SFTP: a window of pipelined requests, then an atomic rename.

Requests go out as asyncio tasks (asyncssh is asyncio-only) and are awaited
oldest first. An SFTP server handles the requests of one handle in order, so
``fsetstat``, ``fsync@openssh.com`` and ``close`` ride in the same pipeline as
the writes; only the rename waits until every reply is in, so a final name
never receives a file with a failed write.

Temporary names are predictable and whoever can write into the destination
may plant something there, typically a symbolic link to a file to destroy.
SFTP opens by path and follows links, so a temporary file is only ever
created exclusively (``FXF_CREAT | FXF_EXCL``: a link there makes the open
fail instead of being followed), after removing what is in the way (SFTP
``remove`` unlinks a link itself); and a partial file is only continued when
the handle opened on it describes the very regular file ``lstat`` saw (see
:func:`open_temp_file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import asyncssh

from finalcopy.backends.base import TempWriter
from finalcopy.backends.sftp.attrs import kind_of, metadata_attrs, mtime_ns_of
from finalcopy.backends.sftp.connection import Session, limited
from finalcopy.backends.sftp.errors import (
    describe_ssh_error,
    in_the_way,
    is_connection_error,
    map_sftp_error,
)
from finalcopy.errors import (
    ConnectionLostError,
    DestinationError,
    FinalcopyError,
    NoSpaceError,
)

logger = logging.getLogger("finalcopy.sftp")

#: Bytes of one file in flight. OpenSSH's channel window is 2 MiB; more would
#: only wait in asyncssh's buffers.
WINDOW_BYTES = 2 * 1024 * 1024
#: The SFTP draft requires servers to accept writes of this size.
SAFE_WRITE = 32 * 1024
#: Flags of a fresh temporary file: never opened if anything (a link…) holds the name.
CREATE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL


def same_file(seen: asyncssh.SFTPAttrs, opened: asyncssh.SFTPAttrs) -> bool:
    """Whether ``fstat`` of a handle (``opened``) matches the ``lstat`` taken before opening.

    SFTP v3 carries no inode number: type, permissions, owner, size and mtime
    are what tell a partial file from a link swapped in behind its name.
    """
    fields = ("permissions", "uid", "gid", "size", "mtime")
    return all(getattr(seen, f) == getattr(opened, f) for f in fields)


async def create_exclusive(
    channel: asyncssh.SFTPClient, tmp: str, where: str, permissions: int = 0o600
) -> asyncssh.SFTPClientFile:
    """Create ``tmp`` exclusively, removing a leftover file or link found at that name.

    A folder there is an error: it is not ours to remove.
    """
    attrs = asyncssh.SFTPAttrs(permissions=permissions)
    try:
        return await channel.open(tmp, CREATE_FLAGS, attrs, encoding=None, block_size=0)
    except asyncssh.SFTPError as exc:
        found = await in_the_way(exc, partial(channel.lstat, tmp))
        if found is None:
            raise  # not in the way: the refusal has another cause
    if kind_of(found) == "dir":
        raise DestinationError(
            f"cannot create '{where}': a folder is in the way at its temporary name "
            f"'{posixpath.basename(tmp)}'"
        )
    await channel.remove(tmp)  # a leftover; for a link, the link itself goes
    return await channel.open(tmp, CREATE_FLAGS, attrs, encoding=None, block_size=0)


async def open_temp_file(
    channel: asyncssh.SFTPClient, tmp: str, where: str, resume: int, permissions: int = 0o600
) -> tuple[asyncssh.SFTPClientFile, int]:
    """A handle on ``tmp`` for writing, and the offset to write at.

    With ``resume`` > 0, the partial file is continued when it is still a
    regular file of ``resume`` bytes: opened without ``CREAT``/``TRUNC``,
    and kept only if the handle's ``fstat`` matches the ``lstat`` (else a
    link was swapped in, or the file changed). Otherwise a fresh file,
    created with ``permissions``.
    """
    if resume:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            seen = await channel.lstat(tmp)
            if kind_of(seen) == "file" and seen.size == resume:
                file = await channel.open(tmp, asyncssh.FXF_WRITE, encoding=None, block_size=0)
                same = False
                try:
                    same = same_file(seen, await file.stat())
                finally:
                    if not same:
                        with contextlib.suppress(asyncssh.Error, OSError):
                            await file.close()
                if same:
                    return file, resume
                logger.warning(
                    "the partial file of '%s' changed as it was opened: starting over", where
                )
    return await create_exclusive(channel, tmp, where, permissions), 0


@dataclass
class ServerQuirks:
    """Extensions found missing on this server; learnt on first use, warned about once."""

    fsync: bool = True
    posix_rename: bool = True


async def rename_into_place(
    sftp: asyncssh.SFTPClient, tmp: str, final: str, quirks: ServerQuirks
) -> None:
    """Atomic ``posix-rename@openssh.com``; remove-then-rename on servers without it."""
    if quirks.posix_rename:
        try:
            await sftp.posix_rename(tmp, final)
            return
        except asyncssh.SFTPOpUnsupported:
            quirks.posix_rename = False
            logger.warning("the server lacks posix-rename@openssh.com: replacing is not atomic")
    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
        await sftp.remove(final)
    await sftp.rename(tmp, final)


class SftpTempWriter(TempWriter):
    """A temporary file on the server with up to :data:`WINDOW_BYTES` of writes in flight."""

    def __init__(
        self,
        session: Session,
        channel: asyncssh.SFTPClient,
        file: asyncssh.SFTPClientFile,
        final: str,
        tmp: str,
        where: str,
        offset: int,
        timeout: float,
        quirks: ServerQuirks,
        *,
        stream: bool = False,
    ) -> None:
        self.session = session
        self.channel = channel
        self.file = file
        self.final = final
        self.tmp = tmp
        self.where = where
        self.offset = offset
        self.timeout = timeout
        self.quirks = quirks
        self.write_len = max(SAFE_WRITE, channel.limits.max_write_len)
        self._depth = max(4, WINDOW_BYTES // self.write_len)
        self._pending: deque[tuple[str, asyncio.Future[Any]]] = deque()
        self._done = False
        self._leased = True
        """The channel was leased for this file by :meth:`Session.channel`."""
        self.stream = stream
        """A large file, weighing more on its channel (see :meth:`Session.channel`)."""
        self._in_flight = 0
        self._clock = asyncio.get_running_loop().time

    @classmethod
    async def open(
        cls,
        session: Session,
        final: str,
        tmp: str,
        where: str,
        *,
        resume: int = 0,
        permissions: int = 0o600,
        time_limit: float,
        quirks: ServerQuirks,
        stream: bool = False,
    ) -> SftpTempWriter:
        """Create the temporary file ``tmp``, or continue it at ``resume``.

        See :func:`open_temp_file`; ``offset`` is 0 when the partial file could
        not be continued, and the caller must then start over. A ``stream``
        (a large file) gets a channel of its own where it can.
        """
        channel = await session.stream_channel() if stream else session.channel()
        try:
            opening = open_temp_file(channel, tmp, where, resume, permissions)
            file, offset = await limited(time_limit, opening)
        except BaseException:
            session.release(channel, stream=stream)
            raise
        return cls(
            session, channel, file, final, tmp, where, offset, time_limit, quirks, stream=stream
        )

    async def write(self, data: bytes | memoryview) -> None:
        if len(data) <= self.write_len:
            await self._send(data if isinstance(data, bytes) else data.tobytes())
            return
        view = memoryview(data)
        for start in range(0, len(view), self.write_len):
            await self._send(view[start : start + self.write_len].tobytes())

    async def _send(self, data: bytes) -> None:
        if len(self._pending) >= self._depth:
            await self._settle_oldest()
        self._submit("write", self.file.write(data, self.offset))
        self.offset += len(data)

    def _submit(self, action: str, request: Awaitable[Any]) -> None:
        future = asyncio.ensure_future(request)
        future.add_done_callback(self._progressed)
        self._pending.append((action, future))
        self._in_flight += 1
        self.session.streams.setdefault(self, self._clock())

    def _progressed(self, _: object) -> None:
        # Feeds the session's stall watch instead of a timeout scope per request.
        self._in_flight -= 1
        if self._in_flight:
            self.session.streams[self] = self._clock()
        else:
            self.session.streams.pop(self, None)

    async def _settle_oldest(self) -> None:
        action, future = self._pending.popleft()
        try:
            await future
        except asyncssh.SFTPOpUnsupported:
            if action != "flush":
                raise
            self.quirks.fsync = False
            logger.warning("the server lacks fsync@openssh.com: files are not flushed to disk")
        except Exception as exc:
            raise await self._failure(exc, action) from None

    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        attrs = metadata_attrs(mode, mtime_ns)
        if mode is not None or mtime_ns is not None:
            self._submit("set metadata of", self.file.setstat(attrs))
        if self.quirks.fsync:
            self._submit("flush", self.file.fsync())
        self._submit("close", self.file.close())
        while self._pending:
            await self._settle_oldest()
        self._release()
        try:
            with anyio.fail_after(self.timeout):
                await rename_into_place(self.channel, self.tmp, self.final, self.quirks)
                self._done = True
                if mtime_ns is None:
                    return mtime_ns_of(await self.channel.lstat(self.final))
        except Exception as exc:
            raise await self._failure(exc, "rename into place") from None
        return mtime_ns_of(attrs)

    async def _failure(self, exc: Exception, action: str) -> FinalcopyError:
        """The finalcopy error for ``exc``; diagnoses OpenSSH's bare "Failure" where it can."""
        if is_connection_error(exc) or not self.session.alive:
            return ConnectionLostError(f"{describe_ssh_error(exc)} ({action} '{self.where}')")
        if not isinstance(exc, asyncssh.SFTPError):
            raise exc
        if isinstance(exc, asyncssh.SFTPFailure):
            # sftp-server reports ENOSPC, EDQUOT, EISDIR… all as "Failure".
            with contextlib.suppress(Exception):
                if action == "write":
                    vfs = await limited(5, self.channel.statvfs(posixpath.dirname(self.tmp)))
                    free = vfs.bavail * vfs.frsize
                    if free < WINDOW_BYTES:
                        return NoSpaceError(
                            f"cannot write '{self.where}': no space left on the server "
                            f"({free} bytes free)"
                        )
                elif (
                    action == "rename into place"
                    and kind_of(await limited(5, self.channel.lstat(self.final))) == "dir"
                ):
                    return DestinationError(
                        f"cannot replace '{self.where}': a folder of that name is in the way"
                    )
        return map_sftp_error(exc, action, self.where)

    async def discard(self) -> None:
        """Drop the requests in flight but keep the partial file, to resume it. Never raises."""
        pending = [future for _, future in self._pending]
        self._pending.clear()
        self.session.streams.pop(self, None)
        for future in pending:
            future.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*pending, return_exceptions=True)
        self._release()

    def _release(self) -> None:
        """Tell the session this file no longer writes through its channel (once)."""
        if self._leased:
            self._leased = False
            self.session.release(self.channel, stream=self.stream)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        await self.discard()
        if not self.session.alive:
            return  # the partial file stays; a later run resumes or replaces it
        with anyio.CancelScope(shield=True), anyio.move_on_after(min(10, self.timeout)):
            with contextlib.suppress(Exception):
                await self.file.close()
            with contextlib.suppress(Exception):
                await self.channel.remove(self.tmp)
