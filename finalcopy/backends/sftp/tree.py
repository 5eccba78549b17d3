"""The destination folder on the server, and the guard that keeps every path inside it.

The destination is untrusted ground: whoever can write there may plant
symbolic links, and an SFTP server resolves every path it is given, links
included. So no path is used to create, rename, remove or change anything
before every folder on its way from the root has been seen by ``lstat`` to
be a real folder (:meth:`RemoteTree.obstacles`, remembered per backend); a
link where a folder is expected is an error naming it, never followed.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncssh

from finalcopy.backends.base import DestStat, EntryKind, RetryListener
from finalcopy.backends.sftp.attrs import kind_of, remote_join, steps, tmp_path, to_stat
from finalcopy.backends.sftp.connection import Link, Session
from finalcopy.backends.sftp.writer import ServerQuirks, SftpTempWriter
from finalcopy.errors import DestinationError

_T = TypeVar("_T")

#: Metadata requests pipelined per round (stat, mkdir, readdir).
REQUEST_BATCH = 256


class RemoteTree:
    """The folder ``base`` on the server behind ``link``: its paths, its calls, its guard."""

    def __init__(self, link: Link, base: str) -> None:
        self.link = link
        self.base = base
        self.root = f"sftp://{link.label}{base}"
        self.quirks = ServerQuirks()
        self._folders: set[str] = set()
        """Folders below the root that ``lstat`` showed to be real folders (see obstacles)."""

    def remote(self, path: str) -> str:
        """Absolute server path of the relative ``path``."""
        return remote_join(self.base, path)

    def describe(self, path: str) -> str:
        """``path`` for messages, as :meth:`~finalcopy.backends.base.Backend.describe`."""
        return f"{self.root.rstrip('/')}/{path}" if path else self.root

    def call(
        self,
        action: str,
        path: str,
        operation: Callable[[Session], Awaitable[_T]],
        time_limit: float | None = None,
        on_retry: RetryListener | None = None,
    ) -> Awaitable[_T]:
        """Run ``operation`` through :meth:`Link.call`, naming ``path`` in its messages."""
        return self.link.call(
            action, self.describe(path), operation, time_limit=time_limit, on_retry=on_retry
        )

    def temp_of(self, path: str, temp: str = "") -> str:
        """Server path of the temporary file for ``path``: ``temp``, else the default."""
        if not temp:
            return tmp_path(self.remote(path))
        # Beside the final name, so the folder checked for one is the folder of both.
        if posixpath.dirname(temp) != posixpath.dirname(path):
            raise DestinationError(
                f"cannot create '{self.describe(path)}': its temporary name "
                f"'{temp}' is not in the same folder"
            )
        return self.remote(temp)

    async def open_writer(
        self,
        session: Session,
        path: str,
        tmp: str,
        resume: int = 0,
        permissions: int = 0o600,
        *,
        stream: bool = False,
    ) -> SftpTempWriter:
        """A writer on ``tmp`` for ``path``, continued at ``resume`` where that is proven safe.

        A fresh temporary file is created with ``permissions`` (less the server's umask);
        a ``stream`` (a large file) gets a channel of its own where it can.
        """
        return await SftpTempWriter.open(
            session,
            self.remote(path),
            tmp,
            self.describe(path),
            resume=resume,
            permissions=permissions,
            time_limit=self.link.timeout,
            quirks=self.quirks,
            stream=stream,
        )

    # -- never through a link ---------------------------------------------

    async def obstacles(
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
            for step in steps(folder):
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
            for step in steps(folder):
                kind = "dir" if step in self._folders else kinds.get(step)
                if kind != "dir":
                    out[folder] = None if kind is None else (step, kind)
                    break
        return out

    async def guard(self, session: Session, action: str, path: str, *, folder: str = "") -> None:
        """Raise unless the way to ``folder`` (by default the folder of ``path``) is clear."""
        folder = folder or posixpath.dirname(path)
        obstacle = (await self.obstacles(session, [folder]))[folder]
        if obstacle is not None:
            raise self.refusal(action, path, *obstacle)

    def refusal(self, action: str, path: str, step: str, kind: EntryKind) -> DestinationError:
        """The error for ``action`` on ``path``, whose way meets ``step``, not a folder."""
        if kind == "symlink":
            what = "a symbolic link (links inside the destination are never followed)"
        else:
            what = "not a folder"
        return DestinationError(
            f"cannot {action} '{self.describe(path)}': '{self.describe(step)}' is {what}"
        )

    def proven(self, folder: str) -> None:
        """Remember ``folder`` as a real folder (one we just created)."""
        self._folders.add(folder)

    def is_proven(self, folder: str) -> bool:
        """Whether ``folder`` was seen to be a real folder."""
        return folder in self._folders

    def forget(self, path: str) -> None:
        """Forget the folders at and below ``path``: it was removed or renamed."""
        if path in self._folders:
            below = path + "/"
            self._folders = {f for f in self._folders if f != path and not f.startswith(below)}

    async def lstats(self, session: Session, paths: list[str]) -> list[DestStat | None]:
        """``lstat`` of each path; nothing lies inside the destination below a link (None)."""
        obstacles = await self.obstacles(session, [posixpath.dirname(p) for p in paths])

        async def one(path: str) -> DestStat | None:
            if obstacles[posixpath.dirname(path)] is not None:
                return None
            try:
                return to_stat(await session.control.lstat(self.remote(path)))
            except asyncssh.SFTPNoSuchFile:
                return None

        return list(await asyncio.gather(*(one(p) for p in paths)))
