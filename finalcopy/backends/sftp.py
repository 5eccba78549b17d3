"""SSH/SFTP destinations: pipelined writes, server-side hashing, resume after a drop.

How one file travels (:meth:`SftpBackend.put_file`):

1. The engine's :class:`~finalcopy.backends.base.ChunkSource` is read (and
   hashed) in a worker thread, :data:`READ_CHUNKS` chunks per thread hop.
2. Consecutive chunks are joined into SFTP writes of up to the server's
   ``max_write_len``, a window of them in flight at once; ``fsetstat``,
   ``fsync`` and ``close`` follow in the same pipeline, then
   ``posix-rename`` (see :mod:`finalcopy.backends.sftp_write`).
3. Verification hashes the committed file on the server (``b3sum``,
   ``sha256sum``, ``xxh128sum``, one command for a batch of files, see
   :mod:`finalcopy.backends.sftp_shell`), or reads it back over SFTP when
   the server has no such command.

When the connection drops (see :mod:`finalcopy.backends.sftp_connect`), the
transfer reconnects, hashes the first *k* bytes of its partial temporary
file on the server (``head -c k | b3sum``, or by reading back), compares
them with the same prefix of the source, and continues at *k* when they
match; otherwise it starts over. A later run continues a partial file that
an earlier one left behind the same way.

The destination is untrusted ground: whoever can write there may plant
symbolic links, and an SFTP server resolves every path it is given, links
included. So no path is used to create, rename, remove or change anything
before every folder on its way from the root has been seen by ``lstat`` to
be a real folder (:meth:`SftpBackend._obstacles`, remembered per backend); a
link where a folder is expected is an error naming it, never followed.
Temporary files are created exclusively (see :mod:`finalcopy.backends.sftp_write`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import posixpath
import stat as stat_module
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import asyncssh

from finalcopy.backends.base import (
    Backend,
    Capabilities,
    ChunkSource,
    DestStat,
    EntryKind,
    FileTransfer,
    TempWriter,
    fresh_temp_name,
    temp_name,
)
from finalcopy.backends.registry import DestinationOptions, SshLocation
from finalcopy.backends.sftp_connect import (
    PROBE_TIMEOUT,
    Link,
    RetryListener,
    Session,
    is_connection_error,
    map_sftp_error,
    remote_join,
)
from finalcopy.backends.sftp_settings import Target
from finalcopy.backends.sftp_shell import (
    batches,
    listable,
    parse_listing,
    parse_silence,
    parse_stdin_digest,
    quote,
)
from finalcopy.backends.sftp_write import (
    WINDOW_BYTES,
    ServerQuirks,
    SftpTempWriter,
    coalesce,
    kind_of,
    limited,
    rename_into_place,
    tmp_path,
    to_stat,
)
from finalcopy.errors import (
    DestinationError,
    DestinationUnusable,
    FinalcopyError,
    Interrupted,
    SourceError,
)
from finalcopy.hashing import ALGORITHMS, Algorithm

__all__ = ["SftpBackend", "open_sftp_backend"]

logger = logging.getLogger("finalcopy.sftp")

_T = TypeVar("_T")

#: Chunks read per worker-thread hop (1 MiB at the default chunk size).
READ_CHUNKS = 16
#: Files of one batch in flight at once: small files are all round trips.
FILES_IN_FLIGHT = 8
#: Smaller partial files are rewritten rather than proven and continued; smaller
#: files are read whole, a batch of them per thread hop.
RESUME_MIN = 1024 * 1024
PRELOAD_BYTES = 4 * 1024 * 1024
READER_THREADS = 4
#: Large files streaming at once, whatever the engine's job count: one or two
#: streams fill the connection, and each holds a window of buffers.
STREAMS = 2
#: Server-side hashing may take ``timeout + size / HASH_RATE_FLOOR`` seconds.
HASH_RATE_FLOOR = 20 * 1024 * 1024
READBACK_BLOCK = 2 * 1024 * 1024
#: Metadata requests pipelined per round (stat, mkdir, readdir).
REQUEST_BATCH = 256
#: Seconds opening a backend waits for the hash-tool probe, so that the strategy
#: line can name the server's tools; the transfer never waits longer for it.
PROBE_GRACE = 1.0


def _read_whole(sources: list[ChunkSource]) -> list[bytes | SourceError]:
    """Each source's whole content (or its read error); runs in a worker thread."""
    out: list[bytes | SourceError] = []
    for source in sources:
        chunks: list[bytes] = []
        try:
            while True:
                batch = source.read_many(READ_CHUNKS)
                chunks += batch
                # A short batch is the end of the file: asking again would not return [].
                if len(batch) < READ_CHUNKS:
                    break
        except SourceError as exc:
            out.append(exc)
            continue
        out.append(b"".join(chunks))
    return out


def _runner(
    command: str, parse: Callable[[list[str]], _T | None]
) -> Callable[[Session], Awaitable[_T | None]]:
    return lambda session: session.run(command, parse)


def _steps(folder: str) -> list[str]:
    """The folders from the root down to ``folder``: ``a``, ``a/b``, ``a/b/c``."""
    if not folder:
        return []
    parts = folder.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _verification(link: Link) -> str:
    """How committed files are proven, as far as the hash-tool probe has told."""
    tools = link.known_tools
    if tools:
        return (
            f"hashing on the server ({', '.join(sorted(tools.values()))}), "
            "other algorithms read back over SFTP"
        )
    if link.probing:
        return (
            f"hashing on the server if its shell answers within {PROBE_TIMEOUT:.0f} s, "
            "else read back over SFTP"
        )
    return "read back over SFTP and hashed here (the server runs no hash command)"


class SftpBackend(Backend):
    """A folder on an SSH server, written through the SFTP channels of one connection."""

    def __init__(self, link: Link, base: str, session: Session) -> None:
        self.link = link
        self.base = base
        self.root = f"sftp://{link.label}{base}"
        self.quirks = ServerQuirks()
        # Few reader threads: each thread's malloc arena keeps its own high-water mark.
        self._readers = anyio.CapacityLimiter(READER_THREADS)
        self._streams = anyio.CapacityLimiter(STREAMS)
        self._folders: set[str] = set()
        """Folders below the root that ``lstat`` showed to be real folders (see _obstacles)."""
        self.capabilities = Capabilities(
            posix_metadata=True, remote_hashes=frozenset(link.known_tools), resume=True
        )
        cipher = session.conn.get_extra_info("send_cipher") or "default cipher"
        self.strategy = (
            f"SFTP to {link.label} ({cipher}, {link.channels} channel(s), "
            f"{WINDOW_BYTES >> 20} MiB of writes in flight per file, resumable); "
            f"verification: {_verification(link)}"
        )

    @property
    def on_retry(self) -> RetryListener | None:
        """Called as ``(path, attempt, error)`` before a dropped operation is retried."""
        return self.link.on_retry

    @on_retry.setter
    def on_retry(self, listener: RetryListener | None) -> None:
        self.link.on_retry = listener

    async def aclose(self) -> None:
        await self.link.aclose()

    def remote(self, path: str) -> str:
        """Absolute server path of the relative ``path``."""
        return remote_join(self.base, path)

    def _call(
        self,
        action: str,
        path: str,
        operation: Callable[[Session], Awaitable[Any]],
        time_limit: float | None = None,
    ) -> Awaitable[Any]:
        return self.link.call(action, self.describe(path), operation, time_limit=time_limit)

    async def _writer(
        self, session: Session, path: str, tmp: str, resume: int = 0
    ) -> SftpTempWriter:
        return await SftpTempWriter.open(
            session,
            self.remote(path),
            tmp,
            self.describe(path),
            resume=resume,
            time_limit=self.link.timeout,
            quirks=self.quirks,
        )

    def _temp_of(self, transfer: FileTransfer) -> str:
        """Server path of the transfer's temporary file: the engine's choice, else the default."""
        if not transfer.temp:
            return tmp_path(self.remote(transfer.path))
        # Beside the final name, so the folder checked for one is the folder of both.
        if posixpath.dirname(transfer.temp) != posixpath.dirname(transfer.path):
            raise DestinationError(
                f"cannot create '{self.describe(transfer.path)}': its temporary name "
                f"'{transfer.temp}' is not in the same folder"
            )
        return self.remote(transfer.temp)

    # -- never through a link ---------------------------------------------

    async def _obstacles(
        self, session: Session, folders: Sequence[str]
    ) -> dict[str, tuple[str, EntryKind] | None]:
        """For each folder, the first entry on its way from the root that is not a folder.

        The folder itself is on its way. Each step is ``lstat``'ed (nothing is
        followed) until it has been seen to be a real folder, and then
        remembered until it is removed or renamed. A missing step ends the
        way: the operation then creates it, or fails there. ``None`` means
        every existing step is a real folder.
        """
        kinds: dict[str, EntryKind | None] = {}
        todo: dict[int, set[str]] = {}
        for folder in folders:
            for step in _steps(folder):
                if step not in self._folders:
                    todo.setdefault(step.count("/"), set()).add(step)

        async def one(step: str) -> None:
            try:
                kinds[step] = kind_of(await session.control.lstat(self.remote(step)))
            except asyncssh.SFTPNoSuchFile:
                kinds[step] = None
            if kinds[step] == "dir":
                self._folders.add(step)

        for depth in sorted(todo):
            # Below a missing step or an obstacle there is nothing to look at.
            reachable = [
                s for s in todo[depth] if "/" not in s or posixpath.dirname(s) in self._folders
            ]
            for start in range(0, len(reachable), REQUEST_BATCH):
                await asyncio.gather(*(one(s) for s in reachable[start : start + REQUEST_BATCH]))
        out: dict[str, tuple[str, EntryKind] | None] = {}
        for folder in folders:
            out[folder] = None
            for step in _steps(folder):
                kind = "dir" if step in self._folders else kinds.get(step)
                if kind != "dir":
                    out[folder] = None if kind is None else (step, kind)
                    break
        return out

    async def _guard(self, session: Session, action: str, path: str, *, folder: str = "") -> None:
        """Raise unless the way to ``folder`` (by default the folder of ``path``) is clear."""
        folder = folder or posixpath.dirname(path)
        obstacle = (await self._obstacles(session, [folder]))[folder]
        if obstacle is not None:
            raise self._refusal(action, path, *obstacle)

    def _refusal(self, action: str, path: str, step: str, kind: EntryKind) -> DestinationError:
        if kind == "symlink":
            what = "a symbolic link (links inside the destination are never followed)"
        else:
            what = "not a folder"
        return DestinationError(
            f"cannot {action} '{self.describe(path)}': '{self.describe(step)}' is {what}"
        )

    def _forget(self, path: str) -> None:
        """Forget the folders at and below ``path``: it was removed or renamed."""
        if path in self._folders:
            below = path + "/"
            self._folders = {f for f in self._folders if f != path and not f.startswith(below)}

    # -- tree -------------------------------------------------------------

    async def prepare(self) -> None:
        try:
            await self.makedirs([""])
            probe = temp_name(f"probe-{id(self)}")
            await self.write_bytes(probe, b"finalcopy write probe")
            await self.remove(probe)
        except DestinationUnusable:
            raise
        except DestinationError as exc:
            raise DestinationUnusable(f"destination '{self.root}' is not writable: {exc}") from None

    async def makedirs(self, paths: Sequence[str]) -> None:
        if "" in paths:
            await self._call("create folder", "", self._make_root)
        # Parents before children, each proven a real folder before anything is created
        # in it; the folders of one depth are created together.
        levels: dict[int, list[str]] = {}
        for step in dict.fromkeys(s for path in paths for s in _steps(path)):
            if step not in self._folders:
                levels.setdefault(step.count("/"), []).append(step)
        for depth in sorted(levels):
            for start in range(0, len(levels[depth]), REQUEST_BATCH):
                group = levels[depth][start : start + REQUEST_BATCH]
                await self._call("create folder", group[0], partial(self._mkdirs, paths=group))

    async def _make_root(self, session: Session) -> None:
        sftp = session.control
        try:
            await sftp.mkdir(self.base)
        except asyncssh.SFTPError as exc:
            if is_connection_error(exc):
                raise
            try:
                # The root is the user's choice: a link to a folder is fine there.
                attrs = await sftp.stat(self.base)
            except asyncssh.SFTPNoSuchFile:
                await sftp.makedirs(self.base, exist_ok=True)  # a parent is missing
                return
            if kind_of(attrs) != "dir":
                raise map_sftp_error(exc, "create folder", self.root) from None

    async def _mkdirs(self, session: Session, paths: list[str]) -> None:
        sftp = session.control

        async def one(path: str) -> None:
            try:
                await sftp.mkdir(self.remote(path))  # never follows a link at that name
            except asyncssh.SFTPError as exc:
                if is_connection_error(exc):
                    raise
                try:
                    kind = kind_of(await sftp.lstat(self.remote(path)))
                except asyncssh.SFTPNoSuchFile:
                    raise map_sftp_error(exc, "create folder", self.describe(path)) from None
                if kind != "dir":
                    raise self._refusal("create folder", path, path, kind) from None
            self._folders.add(path)

        await asyncio.gather(*(one(p) for p in paths))

    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        out: list[DestStat | None] = []
        for start in range(0, len(paths), REQUEST_BATCH):
            group = list(paths[start : start + REQUEST_BATCH])
            out += await self._call("stat", group[0], partial(self._lstats, paths=group))
        return out

    async def _lstats(self, session: Session, paths: list[str]) -> list[DestStat | None]:
        # Nothing lies inside the destination below a link: such paths are missing.
        obstacles = await self._obstacles(session, [posixpath.dirname(p) for p in paths])

        async def one(path: str) -> DestStat | None:
            if obstacles[posixpath.dirname(path)] is not None:
                return None
            try:
                return to_stat(await session.control.lstat(self.remote(path)))
            except asyncssh.SFTPNoSuchFile:
                return None

        return list(await asyncio.gather(*(one(p) for p in paths)))

    async def walk(self, path: str = "") -> list[tuple[str, DestStat]]:
        if path:
            (st,) = await self.stat([path])
            if st is None or st.kind != "dir":
                return []  # nothing below a link (or a file)
        out: list[tuple[str, DestStat]] = []
        level = [path]
        while level:
            listings: dict[str, list[tuple[str, DestStat]]] = {}
            for start in range(0, len(level), REQUEST_BATCH):
                group = level[start : start + REQUEST_BATCH]
                listings |= await self._call(
                    "list folder", path, partial(self._list, folders=group)
                )
            level = []
            for parent, entries in listings.items():
                for name, st in entries:
                    child = f"{parent}/{name}" if parent else name
                    out.append((child, st))
                    if st.kind == "dir":  # readdir reports what lstat sees: links stay links
                        level.append(child)
        return out

    async def _list(
        self, session: Session, folders: list[str]
    ) -> dict[str, list[tuple[str, DestStat]]]:
        async def one(folder: str) -> list[tuple[str, DestStat]]:
            try:
                names = await session.control.readdir(self.remote(folder))
            except asyncssh.SFTPNoSuchFile:
                return []
            return [
                (str(n.filename), to_stat(n.attrs)) for n in names if n.filename not in (".", "..")
            ]

        return dict(zip(folders, await asyncio.gather(*(one(f) for f in folders)), strict=True))

    async def remove(self, path: str) -> None:
        async def op(session: Session) -> None:
            await self._guard(session, "remove", path)
            target = self.remote(path)
            try:
                # lstat, and SFTP remove unlinks a link itself: a link to a folder goes alone.
                if kind_of(await session.control.lstat(target)) == "dir":
                    await session.control.rmdir(target)
                else:
                    await session.control.remove(target)
            except asyncssh.SFTPNoSuchFile:
                pass
            finally:
                self._forget(path)

        await self._call("remove", path, op)

    async def rename(self, path: str, new_path: str) -> None:
        async def op(session: Session) -> None:
            await self._guard(session, "rename", path)
            await self._guard(session, "rename", new_path)
            try:
                # Plain SFTP v3 rename: the server refuses an existing target, as the
                # contract asks.
                await session.control.rename(self.remote(path), self.remote(new_path))
            finally:
                self._forget(path)
                self._forget(new_path)

        await self._call("rename", path, op)

    async def symlink(self, path: str, target: str) -> None:
        final = self.remote(path)
        tmp = posixpath.join(posixpath.dirname(final), fresh_temp_name(posixpath.basename(final)))

        async def op(session: Session) -> None:
            await self._guard(session, "create symlink", path)
            sftp = session.control
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                if kind_of(await sftp.lstat(tmp)) == "dir":
                    raise DestinationError(
                        f"cannot create symlink '{self.describe(path)}': a folder is in the way "
                        f"at its temporary name '{posixpath.basename(tmp)}'"
                    )
                await sftp.remove(tmp)  # a leftover; for a link, the link itself goes
            await sftp.symlink(target, tmp)  # fails, never follows, if the name is taken again
            await rename_into_place(sftp, tmp, final, self.quirks)

        await self._call("create symlink", path, op)

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        seconds = mtime_ns // 1_000_000_000
        attrs = asyncssh.SFTPAttrs(
            permissions=stat_module.S_IMODE(mode), atime=seconds, mtime=seconds
        )

        async def op(session: Session) -> None:
            # setstat follows links: the folder itself must be proven a real folder.
            await self._guard(session, "set metadata of", path, folder=path)
            await session.control.setstat(self.remote(path), attrs)

        await self._call("set metadata of", path, op)

    async def sync_dirs(self, paths: Sequence[str]) -> None:
        # SFTP cannot fsync a folder; coreutils' `sync FILE...` fsyncs each one. Best effort.
        if await self.link.hash_tools() is None:
            return  # the server runs no commands, or its shell is too slow to wait for
        quoted = [q for p in paths if (q := quote(self.remote(p))) is not None]
        for command, _ in batches("sync -- ", quoted):
            with contextlib.suppress(DestinationError):
                await self._call("sync", "", _runner(command, parse_silence))

    async def free_space(self, path: str = "") -> int | None:
        async def op(session: Session) -> int | None:
            target = self.remote(path)
            while True:
                try:
                    vfs = await session.control.statvfs(target)
                except asyncssh.SFTPOpUnsupported:
                    return None
                except asyncssh.SFTPNoSuchFile:
                    if target in ("/", ""):
                        return None
                    target = posixpath.dirname(target)
                    continue
                return int(vfs.bavail * vfs.frsize)

        result: int | None = await self._call("check free space of", path, op)
        return result

    # -- files ------------------------------------------------------------

    async def open_temp(self, path: str, *, resume: bool = False) -> TempWriter:
        tmp = tmp_path(self.remote(path))

        async def op(session: Session) -> SftpTempWriter:
            await self._guard(session, "create", path)
            size = 0
            if resume:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    attrs = await session.control.lstat(tmp)
                    size = (attrs.size or 0) if kind_of(attrs) == "file" else 0
            return await self._writer(session, path, tmp, size)

        writer: SftpTempWriter = await self._call("create", path, op)
        return writer

    async def put_files(self, transfers: Sequence[FileTransfer], algorithm: Algorithm) -> None:
        interrupted = False
        contents = await self._preload(transfers)

        async def one(transfer: FileTransfer, scope: anyio.CancelScope) -> None:
            nonlocal interrupted
            if transfer.error is not None:
                return
            async with limiter:
                try:
                    await self._put(transfer, algorithm, contents.get(id(transfer)))
                except Interrupted:
                    interrupted = True
                    scope.cancel()
                except FinalcopyError as exc:
                    transfer.error = exc

        limiter = anyio.CapacityLimiter(FILES_IN_FLIGHT)
        async with anyio.create_task_group() as tg:
            for transfer in transfers:
                tg.start_soon(one, transfer, tg.cancel_scope)
        if interrupted:
            raise Interrupted("interrupted")
        wanted = [t for t in transfers if t.readback and t.error is None]
        with contextlib.suppress(DestinationError):
            # What fails here stays unset: the engine then calls hash_file for that file,
            # which reports the file's own error.
            await self._hash_committed(wanted, algorithm)

    async def put_file(self, transfer: FileTransfer, algorithm: Algorithm) -> None:
        await self._put(transfer, algorithm)
        if transfer.readback:
            transfer.readback_digest = await self.hash_file(transfer.path, algorithm)

    async def _preload(self, transfers: Sequence[FileTransfer]) -> dict[int, bytes]:
        """The small files of a batch, read (and hashed) in one worker-thread hop.

        A thread hop costs more than reading a 4 KiB file. Keyed by ``id`` of
        the transfer; a source error is stored in the transfer instead.
        """
        small: list[FileTransfer] = []
        budget = PRELOAD_BYTES
        for transfer in transfers:
            if transfer.source.size < RESUME_MIN and transfer.source.size <= budget:
                small.append(transfer)
                budget -= transfer.source.size
        if len(small) < 2:
            return {}
        results = await anyio.to_thread.run_sync(
            _read_whole, [t.source for t in small], limiter=self._readers
        )
        contents: dict[int, bytes] = {}
        for transfer, result in zip(small, results, strict=True):
            if isinstance(result, SourceError):
                transfer.error = result
            else:
                contents[id(transfer)] = result
        return contents

    async def _put(
        self, transfer: FileTransfer, algorithm: Algorithm, content: bytes | None = None
    ) -> None:
        """Copy one file (streamed, or ``content`` already read from its source).

        After a drop, reconnect and resume the partial temporary file.
        """
        first = True
        tmp = self._temp_of(transfer)

        async def attempt(session: Session) -> None:
            nonlocal first
            at_start, first = first, False
            if not at_start:
                transfer.attempts += 1
            await self._guard(session, "create", transfer.path)
            if content is not None:
                writer = await self._writer(session, transfer.path, tmp)
            else:
                writer = await self._resume_point(session, transfer, tmp, algorithm, at_start)
            try:
                if content is not None:
                    await writer.write(content)
                else:
                    await self._pump(writer, transfer.source)
                transfer.dest_mtime_ns = await writer.commit(
                    mode=transfer.mode, mtime_ns=transfer.mtime_ns
                )
            except BaseException as exc:
                if isinstance(exc, Exception) and is_connection_error(exc):
                    await writer.discard()  # keep the partial file for the next attempt
                else:
                    await writer.abort()
                raise

        if content is not None:
            await self._call("copy", transfer.path, attempt, time_limit=math.inf)
            return
        async with self._streams:
            await self._call("copy", transfer.path, attempt, time_limit=math.inf)

    async def _resume_point(
        self,
        session: Session,
        transfer: FileTransfer,
        tmp: str,
        algorithm: Algorithm,
        first: bool,
    ) -> SftpTempWriter:
        """The temporary file to write, continued where its content is proven equal."""
        source = transfer.source
        proven = 0
        at_start = first  # the source has not been read yet
        if source.size >= RESUME_MIN:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                attrs = await limited(self.link.timeout, session.control.lstat(tmp))
                size = attrs.size or 0
                if kind_of(attrs) == "file" and 0 < size <= source.size:
                    at_start = False
                    if await self._prefix_matches(session, tmp, size, source, algorithm):
                        proven = size
                    else:
                        logger.info("partial file %s differs from the source: starting over", tmp)
        writer = await self._writer(session, transfer.path, tmp, proven)
        if writer.offset:
            transfer.resumed_from = max(transfer.resumed_from, writer.offset)
            logger.info("resuming '%s' at byte %d", self.describe(transfer.path), writer.offset)
        elif not at_start:
            await anyio.to_thread.run_sync(source.rewind, limiter=self._readers)
        return writer

    async def _prefix_matches(
        self, session: Session, tmp: str, size: int, source: ChunkSource, algorithm: Algorithm
    ) -> bool:
        """Whether the first ``size`` bytes of ``tmp`` equal the source's (then read past them)."""
        # Any algorithm the server computes will do: consume_prefix feeds the
        # copy's own hash regardless of the one it returns.
        tools = await self.link.hash_tools() or {}
        names = [n for n in (algorithm.name, *ALGORITHMS) if n in tools]
        probe, remote = algorithm, None
        quoted = quote(tmp)
        if names and quoted is not None:
            probe = ALGORITHMS[names[0]]
            command = f"head -c {size} < {quoted} | {tools[probe.name]}"
            parse = partial(parse_stdin_digest, algorithm=probe)
            remote = await limited(self._hash_time(size), session.run(command, parse))
        if remote is None:
            probe = algorithm
            remote = await self._read_digest(session, tmp, algorithm, size)
        await anyio.to_thread.run_sync(source.rewind, limiter=self._readers)
        local = await anyio.to_thread.run_sync(
            source.consume_prefix, size, probe, limiter=self._readers
        )
        return local == remote

    async def _pump(self, writer: SftpTempWriter, source: ChunkSource) -> None:
        while True:
            chunks = await anyio.to_thread.run_sync(
                source.read_many, READ_CHUNKS, limiter=self._readers
            )
            for piece in coalesce(chunks, writer.write_len):
                await writer.write(piece)
            # A short batch is the end of the file: asking again would not return [].
            if len(chunks) < READ_CHUNKS:
                break
        if writer.offset != source.size:
            raise SourceError(
                f"'{writer.where}' would not match its source: {source.size} bytes planned, "
                f"{writer.offset} sent"
            )

    # -- reading back and hashing -----------------------------------------

    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        (st,) = await self.stat([path])
        if st is None or st.kind != "file":
            raise DestinationError(f"cannot hash '{self.describe(path)}': no such file")
        tool = (await self.link.hash_tools() or {}).get(algorithm.name)
        quoted = quote(self.remote(path))
        if tool is not None and quoted is not None:
            # From standard input, the tool prints no name: no name can garble its reply.
            parse = partial(parse_stdin_digest, algorithm=algorithm)
            digest: str | None = await self._call(
                "hash", path, _runner(f"{tool} < {quoted}", parse), self._hash_time(st.size)
            )
            if digest is not None:
                return digest
            # The command failed (unreadable file?): reading back says why, or succeeds.
        result: str = await self._call(
            "read back",
            path,
            lambda s: self._read_digest(s, self.remote(path), algorithm),
            math.inf,
        )
        return result

    async def _hash_committed(self, transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        """Fill ``readback_digest``: one server command for many files where possible.

        Only names the tool prints verbatim go into a listing, and a listing
        is used only if every line is ``<digest>  <name>`` for the expected
        name in order; otherwise (a failed file, a stranger's output) each
        file of it is hashed on its own by :meth:`hash_file`. A file that
        fails there stays unset: the engine asks again and gets its error.
        """
        tool = (await self.link.hash_tools() or {}).get(algorithm.name)
        todo = [t for t in transfers if listable(self.remote(t.path))] if tool else []
        if len(todo) < 2:
            todo = []  # for one file, hash_file's command is as cheap
        alone = [t for t in transfers if t not in todo]
        quoted = [q for t in todo if (q := quote(self.remote(t.path))) is not None]
        for command, count in batches(f"{tool} -- ", quoted):
            group, todo = todo[:count], todo[count:]
            time_limit = self._hash_time(sum(t.source.size for t in group))
            parse = partial(
                parse_listing, names=[self.remote(t.path) for t in group], algorithm=algorithm
            )
            digests = await self._call("hash", group[0].path, _runner(command, parse), time_limit)
            if digests is None:
                alone += group
                continue
            for transfer, digest in zip(group, digests, strict=True):
                transfer.readback_digest = digest
        for transfer in alone:
            with contextlib.suppress(DestinationError):
                transfer.readback_digest = await self.hash_file(transfer.path, algorithm)

    async def _read_digest(
        self, session: Session, remote: str, algorithm: Algorithm, limit: int | None = None
    ) -> str:
        """Hash a server file (or its first ``limit`` bytes) by reading it back over SFTP."""
        hasher = algorithm.new()
        offset = 0
        f = await limited(self.link.timeout, session.control.open(remote, "rb", encoding=None))
        try:
            while limit is None or offset < limit:
                want = READBACK_BLOCK if limit is None else min(READBACK_BLOCK, limit - offset)
                data = await limited(self.link.timeout, f.read(want, offset))
                if not data:
                    break
                await anyio.to_thread.run_sync(hasher.update, data)
                offset += len(data)
        finally:
            with contextlib.suppress(asyncssh.Error, OSError):
                await f.close()
        return hasher.hexdigest()

    def _hash_time(self, size: int) -> float:
        return self.link.timeout + size / HASH_RATE_FLOOR

    async def read_bytes(self, path: str) -> bytes | None:
        async def op(session: Session) -> bytes | None:
            await self._guard(session, "read", path)
            try:
                f = await session.control.open(self.remote(path), "rb", encoding=None)
            except asyncssh.SFTPNoSuchFile:
                return None
            try:
                data: bytes = await f.read()
            finally:
                await f.close()
            return data

        result: bytes | None = await self._call("read", path, op)
        return result

    async def write_bytes(self, path: str, data: bytes) -> None:
        tmp = tmp_path(self.remote(path))

        async def op(session: Session) -> None:
            await self._guard(session, "write", path)
            writer = await self._writer(session, path, tmp)
            try:
                await writer.write(data)
                await writer.commit(mode=0o644, mtime_ns=None)
            except BaseException:
                await writer.abort()
                raise

        if posixpath.dirname(path):
            await self.makedirs([posixpath.dirname(path)])
        await self._call("write", path, op)


async def open_sftp_backend(location: SshLocation, options: DestinationOptions) -> Backend:
    """Connect to ``location`` and return its backend (see :mod:`finalcopy.backends.registry`)."""
    target = Target(
        host=location.host,
        user=location.user,
        port=location.port or options.port,
        identity_file=options.identity_file,
        known_hosts=options.known_hosts,
        accept_new_host_key=options.accept_new_host_key,
        ssh_config=options.ssh_config,
        attempts=options.retry_attempts,
        timeout=options.timeout,
        channels=options.jobs,
    )
    link = Link(target)
    try:
        session = await link.session()
        await link.wait_for_probe(PROBE_GRACE)
        base = location.path
        if not base.startswith("/"):
            home = await link.call("find the login folder", base, lambda s: s.control.realpath("."))
            base = posixpath.join(str(home), base)
        return SftpBackend(link, posixpath.normpath(base), session)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await link.aclose()
        raise
