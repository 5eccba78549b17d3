"""Local file systems: the POSIX disk, and the base of the no-metadata (NTFS) backend.

All file work is blocking, so it runs in worker threads; a whole batch of
files runs in one thread hop, which is what keeps 10,000 small files fast.

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
import stat as stat_module
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from finalcopy.backends.base import (
    Backend,
    Capabilities,
    DestStat,
    FileTransfer,
    TempWriter,
    entry_kind,
    fresh_temp_name,
    temp_name,
)
from finalcopy.errors import (
    DestinationError,
    DestinationUnusable,
    FinalcopyError,
    Interrupted,
    map_os_error,
)
from finalcopy.hashing import Algorithm

READBACK_BUFFER = 1 << 20

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a file's name must not hang the read; it is
# then refused as not a regular file. Regular files ignore the flag.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Names that would not stay in their folder (``""``: an absolute path or ``a//b``).
_NOT_NAMES = frozenset({"", ".", ".."})

_T = TypeVar("_T")


def _to_stat(st: os.stat_result) -> DestStat:
    return DestStat(
        entry_kind(st.st_mode), st.st_size, st.st_mtime_ns, stat_module.S_IMODE(st.st_mode)
    )


def _dest_error(exc: OSError, where: str, action: str) -> DestinationError:
    """:func:`map_os_error`, saying plainly when ``O_NOFOLLOW`` met a link (ELOOP)."""
    if exc.errno == errno.ELOOP:
        return _link_refused(where)
    return map_os_error(exc, where, action)


def _link_refused(where: str) -> DestinationError:
    return DestinationError(f"'{where}' is a symbolic link; refusing to follow it")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat_module.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
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
        if stat_module.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise IsADirectoryError(
                errno.EISDIR, f"a folder is in the way at its temporary name '{name}'"
            )
        os.unlink(name, dir_fd=dir_fd)
    return create()


def create_temp_file(dir_fd: int, name: str, mode: int) -> int:
    """A new empty file ``name`` in folder ``dir_fd``, open for writing; see create_exclusive."""
    try:  # the common case, once per copied file: the name is free
        return os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        return create_exclusive(
            dir_fd, name, partial(os.open, name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
        )


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
                raise _link_refused(self.describe(path)) from None
            raise


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_coalesced(fd: int, read_chunk: Callable[[], memoryview], size: int) -> None:
    """Write what ``read_chunk`` returns in writes of up to ``size`` bytes.

    On FUSE every write() costs the daemon a getxattr("security.capability")
    round trip besides the data (ntfs-3g: 1 per write against 16 for the
    data of a 64 KiB chunk), so fewer, larger writes spare it that work.
    """
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while chunk := read_chunk():
        if filled + len(chunk) > size and filled:
            _write_all(fd, view[:filled])
            filled = 0
        if len(chunk) >= size:
            _write_all(fd, chunk)
            continue
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled:
        _write_all(fd, view[:filled])


def _write_chunks(fd: int, read_chunk: Callable[[], memoryview]) -> None:
    while chunk := read_chunk():
        _write_all(fd, chunk)


def drop_cache(fd: int) -> None:
    """Ask the kernel to forget clean cached pages so the next read hits the device."""
    # Advisory only: some FUSE and network file systems refuse it.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _hash_open(f: io.FileIO, size: int, algorithm: Algorithm) -> str:
    """Hash the open file ``f`` of ``size`` bytes from the device where the OS allows."""
    hasher = algorithm.new()
    # Sized to the file: zeroing 1 MiB per 4 KiB file cost more than reading it.
    buf = bytearray(min(READBACK_BUFFER, size + 1))
    view = memoryview(buf)
    drop_cache(f.fileno())
    while n := f.readinto(buf):
        hasher.update(view[:n])
        if n < len(buf):
            break  # a short read of a regular file is its end
    return hasher.hexdigest()


def hash_path(path: str | Path, algorithm: Algorithm) -> str:
    """Hash a local file by path, bypassing the cache (see :func:`drop_cache`).

    For sources, which are reached by path; destination files are read back
    through their folder's descriptor instead.
    """
    with open(path, "rb", buffering=0) as f:
        return _hash_open(f, os.fstat(f.fileno()).st_size, algorithm)


def _open_regular(dir_fd: int, name: str) -> tuple[io.FileIO, int]:
    """File ``name`` of folder ``dir_fd`` opened for reading, never through a link, and its size.

    Anything but a regular file is refused (OSError EINVAL).
    """
    f = io.FileIO(os.open(name, _READ_FLAGS, dir_fd=dir_fd), "rb")
    try:
        st = os.fstat(f.fileno())
        if not stat_module.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        f.close()
        raise
    return f, st.st_size


def _hash_at(dir_fd: int, name: str, algorithm: Algorithm) -> str:
    f, size = _open_regular(dir_fd, name)
    with f:
        return _hash_open(f, size, algorithm)


class LocalBackend(Backend):
    """A directory on a local file system.

    ``posix_metadata=False`` is the no-metadata mode used on NTFS/FUSE: mode
    and mtime are never applied, so chmod/utime are never called.
    """

    def __init__(
        self,
        root: Path,
        *,
        posix_metadata: bool = True,
        write_buffer: int = 0,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.write_buffer = write_buffer
        """Gather chunks into writes of this many bytes (0: write each chunk as read)."""
        self.root = str(root)
        self.capabilities = Capabilities(posix_metadata=posix_metadata, local_path=True)
        self.strategy = "local POSIX: mode and mtime preserved"
        self._limiter = limiter

    async def _run(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(func, *args), limiter=self._limiter)

    def _folders(self) -> Folders:
        return Folders(self.root, self.describe)

    @contextlib.contextmanager
    def _entry(self, path: str) -> Iterator[tuple[int, str]]:
        """``path``'s folder descriptor and its name, for one operation."""
        folder, name = split_path(path)
        with self._folders() as folders:
            yield folders.get(folder), name

    # -- tree -------------------------------------------------------------

    async def prepare(self) -> None:
        await self._run(self._prepare)

    def _prepare(self) -> None:
        # A fixed name: a crash between create and unlink leaves one temporary
        # file that the next probe clears, not one per process.
        probe = temp_name("finalcopy-write-probe")
        try:
            with self._folders() as folders:
                root = folders.get("", create=True)
                fd = create_temp_file(root, probe, 0o600)
                try:
                    os.write(fd, b"finalcopy write probe")
                finally:
                    os.close(fd)
                    os.unlink(probe, dir_fd=root)
        except OSError as exc:
            raise DestinationUnusable(
                f"destination '{self.root}' is not writable: {exc.strerror or exc}"
            ) from None

    async def makedirs(self, paths: Sequence[str]) -> None:
        await self._run(self._makedirs, list(paths))

    def _makedirs(self, paths: list[str]) -> None:
        with self._folders() as folders:
            for path in paths:
                try:
                    folders.get(path, create=True)
                except OSError as exc:
                    raise _dest_error(exc, self.describe(path), "create folder") from None

    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        result: list[DestStat | None] = await self._run(self._stat_many, list(paths))
        return result

    def _stat_many(self, paths: list[str]) -> list[DestStat | None]:
        out: list[DestStat | None] = []
        with self._folders() as folders:
            for path in paths:
                try:
                    if path:
                        folder, name = split_path(path)
                        st = os.lstat(name, dir_fd=folders.get(folder))
                    else:
                        st = os.stat(self.root)  # the operator's root may be a link
                    out.append(_to_stat(st))
                except (FileNotFoundError, NotADirectoryError):
                    out.append(None)
                except OSError as exc:
                    raise _dest_error(exc, self.describe(path), "stat") from None
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
                try:
                    with os.scandir(folders.get(rel)) as listing:
                        entries = [(e.name, e.stat(follow_symlinks=False)) for e in listing]
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _dest_error(exc, self.describe(rel), "list folder") from None
                for name, st in entries:
                    child = f"{rel}/{name}" if rel else name
                    out.append((child, _to_stat(st)))
                    if stat_module.S_ISDIR(st.st_mode):
                        pending.append(child)
        return out

    async def remove(self, path: str) -> None:
        await self._run(self._remove, path)

    def _remove(self, path: str) -> None:
        try:
            with self._entry(path) as (folder, name):
                if stat_module.S_ISDIR(os.lstat(name, dir_fd=folder).st_mode):
                    os.rmdir(name, dir_fd=folder)
                else:
                    os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _dest_error(exc, self.describe(path), "remove") from None

    async def rename(self, path: str, new_path: str) -> None:
        await self._run(self._rename, path, new_path)

    def _rename(self, path: str, new_path: str) -> None:
        source, target = self.describe(path), self.describe(new_path)
        try:
            with self._entry(path) as (folder, name), self._entry(new_path) as (new_folder, new):
                # os.rename would replace a file or an empty folder there.
                with contextlib.suppress(FileNotFoundError):
                    os.lstat(new, dir_fd=new_folder)
                    raise DestinationError(f"cannot rename '{source}' to '{target}': it exists")
                os.rename(name, new, src_dir_fd=folder, dst_dir_fd=new_folder)
        except OSError as exc:
            raise _dest_error(exc, source, "rename") from None

    async def symlink(self, path: str, target: str) -> None:
        await self._run(self._symlink, path, target)

    def _symlink(self, path: str, target: str) -> None:
        try:
            with self._entry(path) as (folder, name):
                tmp = fresh_temp_name(name)
                try:
                    create_exclusive(folder, tmp, partial(os.symlink, target, tmp, dir_fd=folder))
                    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=folder)
                    raise
        except OSError as exc:
            raise _dest_error(exc, self.describe(path), "create symlink") from None

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        if self.capabilities.posix_metadata:
            await self._run(self._set_metadata, path, mode, mtime_ns)

    def _set_metadata(self, path: str, mode: int, mtime_ns: int) -> None:
        try:
            with self._folders() as folders:
                fd = folders.get(path)
                os.fchmod(fd, stat_module.S_IMODE(mode))
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise _dest_error(exc, self.describe(path), "set metadata of") from None

    async def sync_dirs(self, paths: Sequence[str]) -> None:
        await self._run(self._sync_dirs, list(paths))

    def _sync_dirs(self, paths: list[str]) -> None:
        with self._folders() as folders:
            for path in paths:
                try:
                    fd = folders.get(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _dest_error(exc, self.describe(path), "open folder") from None
                try:
                    os.fsync(fd)
                except OSError as exc:
                    # Some FUSE file systems do not implement fsync on folders.
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                        raise _dest_error(exc, self.describe(path), "sync folder") from None

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

    async def open_temp(self, path: str, *, resume: bool = False) -> TempWriter:
        writer: TempWriter = await self._run(self._open_temp, path)
        return writer

    def _open_temp(self, path: str) -> _LocalTempWriter:
        return _LocalTempWriter(self, self._folders(), path, owned=True)

    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        digest: str = await self._run(self._hash_file, path, algorithm)
        return digest

    def _hash_file(self, path: str, algorithm: Algorithm) -> str:
        try:
            with self._entry(path) as (folder, name):
                return _hash_at(folder, name, algorithm)
        except OSError as exc:
            raise _dest_error(exc, self.describe(path), "read back") from None

    async def read_bytes(self, path: str) -> bytes | None:
        data: bytes | None = await self._run(self._read_bytes, path)
        return data

    def _read_bytes(self, path: str) -> bytes | None:
        try:
            with self._entry(path) as (folder, name):
                f, _size = _open_regular(folder, name)
                with f:
                    return f.readall()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _dest_error(exc, self.describe(path), "read") from None

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._run(self._write_bytes, path, data)

    def _write_bytes(self, path: str, data: bytes) -> None:
        with self._folders() as folders:
            try:
                folders.get(split_path(path)[0], create=True)
            except OSError as exc:
                raise _dest_error(exc, self.describe(path), "create folder") from None
            writer = _LocalTempWriter(self, folders, path, mode=0o644)
            writer.fill_and_commit(partial(_write_all, data=data), None, None)

    async def put_files(self, transfers: Sequence[FileTransfer], algorithm: Algorithm) -> None:
        # One thread hop for the whole batch: the per-file cost of small files
        # is dominated by event-loop round trips otherwise.
        await self._run(self._put_batch, list(transfers), algorithm)

    def _put_batch(self, transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        with self._folders() as folders:
            for transfer in transfers:
                try:
                    self._put_blocking(transfer, algorithm, folders)
                except Interrupted:
                    raise
                except FinalcopyError as exc:
                    transfer.error = exc

    def _put_blocking(self, transfer: FileTransfer, algorithm: Algorithm, folders: Folders) -> None:
        writer = _LocalTempWriter(self, folders, transfer.path, transfer.temp)
        read_chunk = transfer.source.read_chunk
        fill: Callable[[int], None]
        if self.write_buffer:
            fill = partial(_write_coalesced, read_chunk=read_chunk, size=self.write_buffer)
        else:
            fill = partial(_write_chunks, read_chunk=read_chunk)
        transfer.dest_mtime_ns = writer.fill_and_commit(fill, transfer.mode, transfer.mtime_ns)
        if transfer.readback:
            try:
                transfer.readback_digest = _hash_at(writer.dir_fd, writer.name, algorithm)
            except OSError as exc:
                raise _dest_error(exc, writer.final, "read back") from None


class _LocalTempWriter(TempWriter):
    """A temporary file beside its final name, both reached through their folder's descriptor.

    Usable from a thread or the event loop. ``folders`` is the caller's (a
    batch's) and must not move to another folder before the writer is
    committed or aborted; with ``owned`` the writer closes it then. ``temp``
    is the engine's temporary path (same folder) or, when empty,
    :func:`temp_name` of the final name.
    """

    def __init__(
        self,
        backend: LocalBackend,
        folders: Folders,
        path: str,
        temp: str = "",
        *,
        mode: int = 0o600,
        owned: bool = False,
    ) -> None:
        self.backend = backend
        self.path = path
        self._owned = folders if owned else None
        self._pending = False
        """The temporary file exists and is ours to remove."""
        self.offset = 0
        self.fd = -1
        try:
            folder, self.name = split_path(path)
            self.tmp = temp.rpartition("/")[2] if temp else temp_name(self.name)
            self.dir_fd = folders.get(folder)
            self.fd = create_temp_file(self.dir_fd, self.tmp, mode)
        except BaseException as exc:
            self._release()
            if isinstance(exc, OSError):
                raise _dest_error(exc, self.final, "create") from None
            raise
        self._pending = True

    @property
    def final(self) -> str:
        """The final name, for messages (built only when one is needed)."""
        return self.backend.describe(self.path)

    async def write(self, data: bytes | memoryview) -> None:
        try:
            await self.backend._run(_write_all, self.fd, data)
        except OSError as exc:
            raise _dest_error(exc, self.final, "write") from None

    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        result: int = await self.backend._run(self.commit_blocking, mode, mtime_ns)
        return result

    def fill_and_commit(
        self, fill: Callable[[int], None], mode: int | None, mtime_ns: int | None
    ) -> int:
        """Write with ``fill(fd)``, then :meth:`commit_blocking`; any failure removes the file."""
        try:
            fill(self.fd)
            return self.commit_blocking(mode, mtime_ns)
        except OSError as exc:
            self.abort_blocking()
            raise _dest_error(exc, self.final, "write") from None
        except BaseException:
            self.abort_blocking()
            raise

    def commit_blocking(self, mode: int | None, mtime_ns: int | None) -> int:
        """fsync, metadata (when kept), rename into place; returns the final mtime."""
        fd = self.fd
        try:
            if self.backend.capabilities.posix_metadata:
                if mode is not None:
                    os.fchmod(fd, stat_module.S_IMODE(mode))
                if mtime_ns is not None:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
            mtime = os.fstat(fd).st_mtime_ns
        except OSError as exc:
            self.abort_blocking()
            raise _dest_error(exc, self.final, "write") from None
        os.close(fd)
        self.fd = -1
        try:
            # Renames the entry itself: a link at the final name is replaced, not followed.
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            self.abort_blocking()
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise DestinationError(
                    f"cannot replace '{self.final}': a folder of that name is in the way"
                ) from None
            raise _dest_error(exc, self.final, "rename into place") from None
        self._pending = False
        self._release()
        return mtime

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
