"""A folder on a local file system that keeps POSIX metadata.

All file work blocks, so it runs in worker threads; a whole batch of files
runs in one thread hop, which is what keeps 10,000 small files fast. Nothing
below the root is reached by path name (see :mod:`.folders`), and every
``OSError`` leaves as a :mod:`finalcopy.errors` exception through
:func:`~finalcopy.errors.os_errors`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from finalcopy.backends.base import (
    Backend,
    Batch,
    Capabilities,
    DestStat,
    FileTransfer,
    OnRetry,
    TempWriter,
    entry_kind,
    fresh_temp_name,
)
from finalcopy.backends.helpers import Helpers
from finalcopy.backends.local.durability import syncfs
from finalcopy.backends.local.folders import (
    Folders,
    create_exclusive,
    open_regular,
    split_path,
)
from finalcopy.backends.local.lanes import Lanes
from finalcopy.backends.local.sending import BatchSend, hash_at
from finalcopy.backends.local.writer import LocalTempWriter, set_fd_metadata
from finalcopy.errors import DestinationError, FinalcopyError, os_errors
from finalcopy.hashing import Algorithm

#: Bytes read, hashed and written at once: one system call each per block, not per chunk.
#: A block the CPU cache holds between the read, the hash and the write (measured on
#: tmpfs: 256 KiB took 7 % less CPU than 1 MiB, 64 KiB about as much as 1 MiB).
BLOCK = 256 << 10
#: What ``fsync`` on a folder says where the file system does not do it (some FUSE ones).
_NO_FOLDER_SYNC = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP)


def _to_stat(st: os.stat_result) -> DestStat:
    return DestStat(entry_kind(st.st_mode), st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


class LocalBackend(Backend):
    """A directory on a local file system, mode and mtime kept (see :class:`NoMetadataBackend`)."""

    block = BLOCK
    """Bytes per read, hash update and write of a file's content."""

    def __init__(
        self,
        root: Path,
        *,
        drop_cache: bool = True,
        batch_sync: bool = False,
        helpers: Helpers | None = None,
    ) -> None:
        self.root = str(root)
        self.drop_cache = drop_cache
        """Read files back from the device, not the page cache (False on tmpfs: no device)."""
        self.batch_sync = batch_sync
        """A batch's files of one folder made durable by one ``syncfs`` (see :mod:`.durability`)."""
        self._lanes = Lanes(helpers)
        """Where each batch runs: a thread, or a helper process (see :mod:`.lanes`)."""
        self.capabilities = Capabilities(posix_metadata=True, symlinks=True, local_path=True)
        self.strategy = "local POSIX: mode and mtime preserved"

    def __getstate__(self) -> dict[str, Any]:
        # What a helper process needs to send a batch (_put_batch); the lanes stay here.
        return {k: v for k, v in self.__dict__.items() if k != "_lanes"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lanes = Lanes(None)

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(func, *args))

    def _folders(self) -> Folders:
        return Folders(self.root, self.describe)

    @contextlib.contextmanager
    def _entry(self, path: str) -> Iterator[tuple[int, str]]:
        """``path``'s folder descriptor and its name, for one operation."""
        folder, name = split_path(path)
        with self._folders() as folders:
            yield folders.get(folder), name

    def _writer(
        self,
        folders: Folders,
        path: str,
        temp: str = "",
        *,
        owned: bool = False,
        create_mode: int = 0o600,
    ) -> LocalTempWriter:
        return LocalTempWriter(
            folders,
            path,
            temp,
            where=self.describe(path),
            posix_metadata=self.capabilities.posix_metadata,
            run=self._run,
            owned=owned,
            create_mode=create_mode,
        )

    # -- tree -------------------------------------------------------------

    async def makedirs(self, paths: Sequence[str]) -> None:
        await self._run(self._makedirs, list(paths))

    def _makedirs(self, paths: list[str]) -> None:
        with self._folders() as folders:
            for path in paths:
                with os_errors(self.describe(path), "create folder"):
                    folders.get(path, create=True)

    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        result: list[DestStat | None] = await self._run(self._stat_many, list(paths))
        return result

    def _stat_many(self, paths: list[str]) -> list[DestStat | None]:
        out: list[DestStat | None] = []
        with self._folders() as folders:
            for path in paths:
                out.append(None)
                with (
                    os_errors(self.describe(path), "stat"),
                    contextlib.suppress(FileNotFoundError, NotADirectoryError),
                ):
                    if path:
                        folder, name = split_path(path)
                        out[-1] = _to_stat(os.lstat(name, dir_fd=folders.get(folder)))
                    else:  # the operator's root may be a link
                        out[-1] = _to_stat(os.stat(self.root))
        return out

    async def walk(self, path: str = "") -> list[tuple[str, DestStat]]:
        result: list[tuple[str, DestStat]] = await self._run(self._walk, path)
        return result

    def _walk(self, path: str) -> list[tuple[str, DestStat]]:
        # Depth first, so the folder chain of ``Folders`` is the walk's own
        # stack: each folder is opened once, relative to its parent.
        out: list[tuple[str, DestStat]] = []
        pending = [path]
        with self._folders() as folders:
            while pending:
                rel = pending.pop()
                entries: list[tuple[str, os.stat_result]] = []
                with (
                    os_errors(self.describe(rel), "list folder"),
                    contextlib.suppress(FileNotFoundError),
                    os.scandir(folders.get(rel)) as listing,
                ):
                    entries = [(e.name, e.stat(follow_symlinks=False)) for e in listing]
                for name, st in entries:
                    child = f"{rel}/{name}" if rel else name
                    out.append((child, _to_stat(st)))
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(child)
        return out

    async def remove(self, path: str) -> None:
        await self._run(self._remove, path)

    def _remove(self, path: str) -> None:
        with (
            os_errors(self.describe(path), "remove"),
            contextlib.suppress(FileNotFoundError),
            self._entry(path) as (folder, name),
        ):
            if stat.S_ISDIR(os.lstat(name, dir_fd=folder).st_mode):
                os.rmdir(name, dir_fd=folder)
            else:
                os.unlink(name, dir_fd=folder)

    async def rename(self, path: str, new_path: str) -> None:
        await self._run(self._rename, path, new_path)

    def _rename(self, path: str, new_path: str) -> None:
        source, target = self.describe(path), self.describe(new_path)
        with (
            os_errors(source, "rename"),
            self._entry(path) as (folder, name),
            self._entry(new_path) as (new_folder, new),
        ):
            # os.rename would replace a file or an empty folder there.
            with contextlib.suppress(FileNotFoundError):
                os.lstat(new, dir_fd=new_folder)
                raise DestinationError(f"cannot rename '{source}' to '{target}': it exists")
            os.rename(name, new, src_dir_fd=folder, dst_dir_fd=new_folder)

    async def symlink(self, path: str, target: str) -> None:
        await self._run(self._symlink, path, target)

    def _symlink(self, path: str, target: str) -> None:
        with os_errors(self.describe(path), "create symlink"), self._entry(path) as (folder, name):
            tmp = fresh_temp_name(name)
            try:
                create_exclusive(folder, tmp, partial(os.symlink, target, tmp, dir_fd=folder))
                os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=folder)
                raise

    async def read_link(self, path: str) -> str | None:
        target: str | None = await self._run(self._read_link, path)
        return target

    def _read_link(self, path: str) -> str | None:
        with (
            os_errors(self.describe(path), "read link"),
            contextlib.suppress(FileNotFoundError, NotADirectoryError),
            self._entry(path) as (folder, name),
        ):
            try:
                return os.readlink(name, dir_fd=folder)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        return None  # missing, or not a link

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        if self.capabilities.posix_metadata:
            await self._run(self._set_metadata, path, mode, mtime_ns)

    def _set_metadata(self, path: str, mode: int, mtime_ns: int) -> None:
        with os_errors(self.describe(path), "set metadata of"), self._folders() as folders:
            set_fd_metadata(folders.get(path), mode, mtime_ns)

    async def seal_folders(self, folders: Sequence[tuple[str, int, int]]) -> None:
        # One thread hop for them all: one per folder cost a tree of small files 10 %.
        if self.capabilities.posix_metadata:
            await self._run(self._seal_folders, list(folders))

    def _seal_folders(self, folders: list[tuple[str, int, int]]) -> None:
        first: FinalcopyError | None = None
        with self._folders() as opened:
            for path, mode, mtime_ns in folders:
                try:
                    with os_errors(self.describe(path), "set metadata of"):
                        set_fd_metadata(opened.get(path), mode, mtime_ns)
                except FinalcopyError as exc:
                    first = first or exc
        if first is not None:
            raise first

    async def sync_dirs(self, paths: Sequence[str]) -> None:
        await self._run(self._sync_dirs, list(paths))

    def _sync_dirs(self, paths: list[str]) -> None:
        with self._folders() as folders:
            sync_device = self._sync_device(folders)
            synced = False  # one syncfs makes every folder of sync_device durable
            for path in paths:
                with os_errors(self.describe(path), "sync folder"):
                    try:
                        fd = folders.get(path)
                    except FileNotFoundError:
                        continue
                    if sync_device is not None and os.fstat(fd).st_dev == sync_device:
                        if not synced:
                            syncfs(fd)
                            synced = True
                        continue
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        if exc.errno not in _NO_FOLDER_SYNC:
                            raise

    async def free_space(self, path: str = "") -> int | None:
        result: int | None = await self._run(self._free_space, path)
        return result

    def _free_space(self, path: str) -> int | None:
        """Space of the deepest real folder on the way to ``path``; None without the root."""
        target = path
        with self._folders() as folders:
            while True:
                try:
                    st = os.fstatvfs(folders.get(target))
                    return st.f_bavail * st.f_frsize
                except (OSError, DestinationError):
                    if not target:
                        return None
                    target = target.rpartition("/")[0]

    # -- files ------------------------------------------------------------

    async def open_temp(self, path: str, temp: str = "") -> TempWriter:
        writer: TempWriter = await self._run(self._open_temp, path, temp)
        return writer

    def _open_temp(self, path: str, temp: str) -> LocalTempWriter:
        return self._writer(self._folders(), path, temp, owned=True)

    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        digest: str = await self._run(self._hash_file, path, algorithm)
        return digest

    def _hash_file(self, path: str, algorithm: Algorithm) -> str:
        with os_errors(self.describe(path), "read back"), self._entry(path) as (folder, name):
            return hash_at(folder, name, algorithm, self.drop_cache)

    async def read_bytes(self, path: str) -> bytes | None:
        data: bytes | None = await self._run(self._read_bytes, path)
        return data

    def _read_bytes(self, path: str) -> bytes | None:
        with (
            os_errors(self.describe(path), "read"),
            contextlib.suppress(FileNotFoundError),
            self._entry(path) as (folder, name),
        ):
            f, _size = open_regular(folder, name)
            with f:
                return f.readall()
        return None

    async def put_files(
        self, transfers: Batch, algorithm: Algorithm, *, on_retry: OnRetry = None
    ) -> None:
        batch = list(transfers)
        await self._lanes.put(self._put_batch, batch, algorithm, memory=not self.drop_cache)

    def _put_batch(self, transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        with self._folders() as folders:
            new_writer = partial(self._new_writer, folders)
            sync_device = self._sync_device(folders)
            send = BatchSend(
                folders, new_writer, algorithm, self.block, self.drop_cache, sync_device
            )
            send.run(transfers)

    def _sync_device(self, folders: Folders) -> int | None:
        """The root's device where :attr:`batch_sync` was chosen for its file system, else None."""
        if not self.batch_sync:
            return None
        try:
            return os.fstat(folders.get("")).st_dev
        except OSError:
            return None  # no root (yet): nothing to sync together

    def _new_writer(self, folders: Folders, transfer: FileTransfer) -> LocalTempWriter:
        return self._writer(folders, transfer.path, transfer.temp, create_mode=transfer.create_mode)
