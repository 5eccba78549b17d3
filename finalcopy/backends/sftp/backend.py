"""A folder on an SSH server, reached through the SFTP channels of one connection.

The pieces, each in its module: the connection and its retries
(:mod:`.connection`, with :mod:`.settings` and :mod:`.transport`), the
guard that keeps every path off symbolic links (:mod:`.tree`), one file
written and committed (:mod:`.writer`), batches of files sent, resumed after
a drop (:mod:`.upload`), hashes taken on the server (:mod:`.digests`,
through :mod:`.shell`), and asyncssh's errors translated (:mod:`.errors`).
This module holds the tree operations and ties the pieces together.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import Sequence
from functools import partial

import anyio
import asyncssh

from finalcopy.backends.base import (
    Backend,
    Batch,
    Capabilities,
    DestStat,
    OnRetry,
    TempWriter,
    fresh_temp_name,
)
from finalcopy.backends.helpers import Helpers
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.backends.sftp.attrs import kind_of, metadata_attrs, steps, to_stat
from finalcopy.backends.sftp.connection import Link, Session
from finalcopy.backends.sftp.digests import ServerHashes, runner
from finalcopy.backends.sftp.elsewhere import SendOverOwnConnection
from finalcopy.backends.sftp.errors import in_the_way, map_sftp_error
from finalcopy.backends.sftp.shell import PROBE_TIMEOUT, batches, parse_silence, quote
from finalcopy.backends.sftp.tree import REQUEST_BATCH, RemoteTree
from finalcopy.backends.sftp.upload import Uploader
from finalcopy.backends.sftp.writer import WINDOW_BYTES, rename_into_place
from finalcopy.errors import DestinationError
from finalcopy.hashing import Algorithm

__all__ = ["SftpBackend", "open_sftp_backend"]

#: Seconds opening a backend waits for the hash-tool probe, so that the strategy
#: line can name the server's tools; the transfer never waits longer for it.
PROBE_GRACE = 1.0


def _verification(link: Link) -> str:
    """How committed files are proven, as far as the hash-tool probe has told."""
    tools = link.tools.known
    if tools:
        return (
            f"hashing on the server ({', '.join(sorted(tools.values()))}), "
            "other algorithms read back over SFTP"
        )
    if link.tools.pending:
        return (
            f"hashing on the server if its shell answers within {PROBE_TIMEOUT:.0f} s, "
            "else read back over SFTP"
        )
    return "read back over SFTP and hashed here (the server runs no hash command)"


class SftpBackend(Backend):
    """A folder on an SSH server, written through the SFTP channels of one connection."""

    def __init__(
        self,
        tree: RemoteTree,
        session: Session,
        helpers: Helpers | None,
        elsewhere: SendOverOwnConnection,
    ) -> None:
        self.tree = tree
        self.helpers = helpers
        """Processes that send a batch over their own connection while this one sends."""
        self._elsewhere = elsewhere
        self._sending = 0
        self.link = tree.link
        self.root = tree.root
        self.hashes = ServerHashes(tree)
        self.uploader = Uploader(tree, self.hashes)
        self.capabilities = Capabilities(posix_metadata=True, symlinks=True)
        cipher = session.conn.get_extra_info("send_cipher") or "default cipher"
        self.strategy = (
            f"SFTP to {self.link.label} ({cipher}, {self.link.channels} channel(s), "
            f"{WINDOW_BYTES >> 20} MiB of writes in flight per file, resumable); "
            f"verification: {_verification(self.link)}"
        )

    async def aclose(self) -> None:
        await self.link.aclose()

    # -- tree -------------------------------------------------------------

    async def makedirs(self, paths: Sequence[str]) -> None:
        if "" in paths:
            await self.tree.call("create folder", "", self._make_root)
        # Parents before children, each proven a real folder before anything is created
        # in it; the folders of one depth are created together.
        levels: dict[int, list[str]] = {}
        for step in dict.fromkeys(s for path in paths for s in steps(path)):
            if not self.tree.is_proven(step):
                levels.setdefault(step.count("/"), []).append(step)
        for depth in sorted(levels):
            for start in range(0, len(levels[depth]), REQUEST_BATCH):
                group = levels[depth][start : start + REQUEST_BATCH]
                await self.tree.call("create folder", group[0], partial(self._mkdirs, paths=group))

    async def _make_root(self, session: Session) -> None:
        sftp, base = session.control, self.tree.base
        try:
            await sftp.mkdir(base)
        except asyncssh.SFTPError as exc:
            # The root is the user's choice: a link to a folder is fine there.
            attrs = await in_the_way(exc, partial(sftp.stat, base))
            if attrs is None:
                await sftp.makedirs(base, exist_ok=True)  # a parent is missing
            elif kind_of(attrs) != "dir":
                raise map_sftp_error(exc, "create folder", self.root) from None

    async def _mkdirs(self, session: Session, paths: list[str]) -> None:
        sftp, tree = session.control, self.tree

        async def one(path: str) -> None:
            try:
                await sftp.mkdir(tree.remote(path))  # never follows a link at that name
            except asyncssh.SFTPError as exc:
                found = await in_the_way(exc, partial(sftp.lstat, tree.remote(path)))
                if found is None:
                    raise map_sftp_error(exc, "create folder", tree.describe(path)) from None
                if kind_of(found) != "dir":
                    raise tree.refusal("create folder", path, path, kind_of(found)) from None
            tree.proven(path)

        await asyncio.gather(*(one(p) for p in paths))

    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        out: list[DestStat | None] = []
        for start in range(0, len(paths), REQUEST_BATCH):
            group = list(paths[start : start + REQUEST_BATCH])
            out += await self.tree.call("stat", group[0], partial(self.tree.lstats, paths=group))
        return out

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
                listings |= await self.tree.call(
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
                names = await session.control.readdir(self.tree.remote(folder))
            except asyncssh.SFTPNoSuchFile:
                return []
            return [
                (str(n.filename), to_stat(n.attrs)) for n in names if n.filename not in (".", "..")
            ]

        return dict(zip(folders, await asyncio.gather(*(one(f) for f in folders)), strict=True))

    async def remove(self, path: str) -> None:
        tree = self.tree

        async def op(session: Session) -> None:
            await tree.guard(session, "remove", path)
            target = tree.remote(path)
            try:
                # lstat, and SFTP remove unlinks a link itself: a link to a folder goes alone.
                if kind_of(await session.control.lstat(target)) == "dir":
                    await session.control.rmdir(target)
                else:
                    await session.control.remove(target)
            except asyncssh.SFTPNoSuchFile:
                pass
            finally:
                tree.forget(path)

        await tree.call("remove", path, op)

    async def rename(self, path: str, new_path: str) -> None:
        tree = self.tree

        async def op(session: Session) -> None:
            await tree.guard(session, "rename", path)
            await tree.guard(session, "rename", new_path)
            try:
                # Plain SFTP v3 rename: the server refuses an existing target, as the
                # contract asks.
                await session.control.rename(tree.remote(path), tree.remote(new_path))
            finally:
                tree.forget(path)
                tree.forget(new_path)

        await tree.call("rename", path, op)

    async def symlink(self, path: str, target: str) -> None:
        tree = self.tree
        final = tree.remote(path)
        tmp = posixpath.join(posixpath.dirname(final), fresh_temp_name(posixpath.basename(final)))

        async def op(session: Session) -> None:
            await tree.guard(session, "create symlink", path)
            sftp = session.control
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                if kind_of(await sftp.lstat(tmp)) == "dir":
                    raise DestinationError(
                        f"cannot create symlink '{tree.describe(path)}': a folder is in the way "
                        f"at its temporary name '{posixpath.basename(tmp)}'"
                    )
                await sftp.remove(tmp)  # a leftover; for a link, the link itself goes
            await sftp.symlink(target, tmp)  # fails, never follows, if the name is taken again
            await rename_into_place(sftp, tmp, final, tree.quirks)

        await tree.call("create symlink", path, op)

    async def read_link(self, path: str) -> str | None:
        tree = self.tree

        async def op(session: Session) -> str | None:
            await tree.guard(session, "read link", path)
            target = tree.remote(path)
            try:
                if kind_of(await session.control.lstat(target)) != "symlink":
                    return None
                link: str = await session.control.readlink(target)
            except asyncssh.SFTPNoSuchFile:
                return None
            return link

        result: str | None = await tree.call("read link", path, op)
        return result

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        attrs = metadata_attrs(mode, mtime_ns)

        async def op(session: Session) -> None:
            # setstat follows links: the folder itself must be proven a real folder.
            await self.tree.guard(session, "set metadata of", path, folder=path)
            await session.control.setstat(self.tree.remote(path), attrs)

        await self.tree.call("set metadata of", path, op)

    async def sync_dirs(self, paths: Sequence[str]) -> None:
        # SFTP cannot fsync a folder; coreutils' `sync FILE...` fsyncs each one. Best effort.
        if await self.link.hash_tools() is None:
            return  # the server runs no commands, or its shell is too slow to wait for
        quoted = [q for p in paths if (q := quote(self.tree.remote(p))) is not None]
        for command, _ in batches("sync -- ", quoted):
            with contextlib.suppress(DestinationError):
                await self.tree.call("sync", "", runner(command, parse_silence))

    async def free_space(self, path: str = "") -> int | None:
        async def op(session: Session) -> int | None:
            target = self.tree.remote(path)
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

        return await self.tree.call("check free space of", path, op)

    # -- files ------------------------------------------------------------

    async def open_temp(self, path: str, temp: str = "") -> TempWriter:
        tree = self.tree
        tmp = tree.temp_of(path, temp)

        async def op(session: Session) -> TempWriter:
            await tree.guard(session, "create", path)
            return await tree.open_writer(session, path, tmp)

        return await tree.call("create", path, op)

    async def read_bytes(self, path: str) -> bytes | None:
        async def op(session: Session) -> bytes | None:
            await self.tree.guard(session, "read", path)
            try:
                f = await session.control.open(self.tree.remote(path), "rb", encoding=None)
            except asyncssh.SFTPNoSuchFile:
                return None
            try:
                data: bytes = await f.read()
            finally:
                await f.close()
            return data

        return await self.tree.call("read", path, op)

    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        return await self.hashes.hash_file(path, algorithm)

    async def put_files(
        self, transfers: Batch, algorithm: Algorithm, *, on_retry: OnRetry = None
    ) -> None:
        helpers, batch = self.helpers, list(transfers)
        if helpers and self._sending and await helpers.offer(self._elsewhere, batch, algorithm):
            return
        self._sending += 1
        try:
            await self.uploader.put_files(batch, algorithm, on_retry)
        finally:
            self._sending -= 1


async def open_sftp_backend(location: SshLocation, options: DestinationOptions) -> Backend:
    """Connect to ``location`` and return its backend (see :mod:`finalcopy.backends.registry`)."""
    link = Link(location, options)
    try:
        session = await link.session()
        await link.tools.wait(PROBE_GRACE)
        base = location.path
        if not base.startswith("/"):
            home = await link.call("find the login folder", base, lambda s: s.control.realpath("."))
            base = posixpath.join(str(home), base)
        elsewhere = SendOverOwnConnection.to(open_sftp_backend, location, options)
        tree = RemoteTree(link, posixpath.normpath(base))
        return SftpBackend(tree, session, options.helpers, elsewhere)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await link.aclose()
        raise
