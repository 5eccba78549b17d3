"""Local file systems: the POSIX disk, and the base of the no-metadata (NTFS) backend.

All file work is blocking, so it runs in worker threads; a whole batch of
files runs in one thread hop, which is what keeps 10,000 small files fast.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_module
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from finalcopy.backends.base import (
    Backend,
    Capabilities,
    DestStat,
    FileTransfer,
    TempWriter,
    entry_kind,
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


def _to_stat(st: os.stat_result) -> DestStat:
    return DestStat(
        entry_kind(st.st_mode), st.st_size, st.st_mtime_ns, stat_module.S_IMODE(st.st_mode)
    )


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


def drop_cache(fd: int) -> None:
    """Ask the kernel to forget clean cached pages so the next read hits the device."""
    # Advisory only: some FUSE and network file systems refuse it.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def hash_path(path: str | Path, algorithm: Algorithm) -> str:
    """Hash a local file from the device where the OS allows (see :func:`drop_cache`)."""
    hasher = algorithm.new()
    with open(path, "rb", buffering=0) as f:
        # Sized to the file: zeroing 1 MiB per 4 KiB file cost more than reading it.
        buf = bytearray(min(READBACK_BUFFER, os.fstat(f.fileno()).st_size + 1))
        view = memoryview(buf)
        drop_cache(f.fileno())
        while n := f.readinto(buf):
            hasher.update(view[:n])
            if n < len(buf):
                break  # a short read of a regular file is its end
    return hasher.hexdigest()


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
        self.base = root
        self.write_buffer = write_buffer
        """Gather chunks into writes of this many bytes (0: write each chunk as read)."""
        self.root = str(root)
        self.capabilities = Capabilities(posix_metadata=posix_metadata, local_path=True)
        self.strategy = "local POSIX: mode and mtime preserved"
        self._limiter = limiter

    def _path(self, path: str) -> Path:
        return self.base / path if path else self.base

    async def _run(self, func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(func, *args), limiter=self._limiter)

    # -- tree -------------------------------------------------------------

    async def prepare(self) -> None:
        await self._run(self._prepare)

    def _prepare(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            # A fixed name: a crash between create and unlink leaves one
            # temporary file that the next probe reuses, not one per process.
            probe = self.base / temp_name("finalcopy-write-probe")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"finalcopy write probe")
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            raise DestinationUnusable(
                f"destination '{self.base}' is not writable: {exc.strerror or exc}"
            ) from None

    async def makedirs(self, paths: Sequence[str]) -> None:
        await self._run(self._makedirs, list(paths))

    def _makedirs(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self._path(path).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise map_os_error(exc, self._path(path), "create folder") from None

    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        result: list[DestStat | None] = await self._run(self._stat_many, list(paths))
        return result

    def _stat_many(self, paths: list[str]) -> list[DestStat | None]:
        out: list[DestStat | None] = []
        for path in paths:
            try:
                out.append(_to_stat(os.lstat(self._path(path))))
            except FileNotFoundError:
                out.append(None)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    out.append(None)
                else:
                    raise map_os_error(exc, self._path(path), "stat") from None
        return out

    async def walk(self, path: str = "") -> list[tuple[str, DestStat]]:
        result: list[tuple[str, DestStat]] = await self._run(self._walk, path)
        return result

    def _walk(self, path: str) -> list[tuple[str, DestStat]]:
        out: list[tuple[str, DestStat]] = []
        pending = [path]
        while pending:
            rel = pending.pop()
            try:
                entries = list(os.scandir(self._path(rel)))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise map_os_error(exc, self._path(rel), "list folder") from None
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                st = _to_stat(entry.stat(follow_symlinks=False))
                out.append((child, st))
                if st.kind == "dir":
                    pending.append(child)
        return out

    async def remove(self, path: str) -> None:
        await self._run(self._remove, path)

    def _remove(self, path: str) -> None:
        target = self._path(path)
        try:
            if target.is_dir() and not target.is_symlink():
                target.rmdir()
            else:
                target.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise map_os_error(exc, target, "remove") from None

    async def rename(self, path: str, new_path: str) -> None:
        await self._run(self._rename, path, new_path)

    def _rename(self, path: str, new_path: str) -> None:
        source, target = self._path(path), self._path(new_path)
        if os.path.lexists(target):  # os.rename would replace an empty folder or a file
            raise DestinationError(f"cannot rename '{source}' to '{target}': it exists")
        try:
            os.rename(source, target)
        except OSError as exc:
            raise map_os_error(exc, source, "rename") from None

    async def symlink(self, path: str, target: str) -> None:
        await self._run(self._symlink, path, target)

    def _symlink(self, path: str, target: str) -> None:
        final = self._path(path)
        tmp = final.with_name(temp_name(final.name))
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise map_os_error(exc, final, "create symlink") from None

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        if self.capabilities.posix_metadata:
            await self._run(self._set_metadata, path, mode, mtime_ns)

    def _set_metadata(self, path: str, mode: int, mtime_ns: int) -> None:
        target = self._path(path)
        try:
            os.chmod(target, stat_module.S_IMODE(mode))
            os.utime(target, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise map_os_error(exc, target, "set metadata of") from None

    async def sync_dirs(self, paths: Sequence[str]) -> None:
        await self._run(self._sync_dirs, list(paths))

    def _sync_dirs(self, paths: list[str]) -> None:
        for path in paths:
            try:
                fd = os.open(self._path(path), os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise map_os_error(exc, self._path(path), "open folder") from None
            try:
                os.fsync(fd)
            except OSError as exc:
                # Some FUSE file systems do not implement fsync on folders.
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                    raise map_os_error(exc, self._path(path), "sync folder") from None
            finally:
                os.close(fd)

    async def free_space(self, path: str = "") -> int | None:
        result: int | None = await self._run(self._free_space, path)
        return result

    def _free_space(self, path: str) -> int | None:
        target = self._path(path)
        while not target.exists() and target != target.parent:
            target = target.parent
        try:
            st = os.statvfs(target)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    # -- files ------------------------------------------------------------

    async def open_temp(self, path: str, *, resume: bool = False) -> TempWriter:
        writer: TempWriter = await self._run(_LocalTempWriter, self, path)
        return writer

    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        try:
            digest: str = await self._run(hash_path, self._path(path), algorithm)
        except OSError as exc:
            raise map_os_error(exc, self._path(path), "read back") from None
        return digest

    async def read_bytes(self, path: str) -> bytes | None:
        try:
            data: bytes = await self._run(self._path(path).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise map_os_error(exc, self._path(path), "read") from None
        return data

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._run(self._write_bytes, path, data)

    def _write_bytes(self, path: str, data: bytes) -> None:
        final = self._path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(temp_name(final.name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise map_os_error(exc, final, "write") from None

    async def put_files(self, transfers: Sequence[FileTransfer], algorithm: Algorithm) -> None:
        # One thread hop for the whole batch: the per-file cost of small files
        # is dominated by event-loop round trips otherwise.
        await self._run(self._put_batch, list(transfers), algorithm)

    def _put_batch(self, transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        for transfer in transfers:
            try:
                self._put_blocking(transfer, algorithm)
            except Interrupted:
                raise
            except FinalcopyError as exc:
                transfer.error = exc

    def _put_blocking(self, transfer: FileTransfer, algorithm: Algorithm) -> None:
        writer = _LocalTempWriter(self, transfer.path)
        try:
            read_chunk = transfer.source.read_chunk
            fd = writer.fd
            if self.write_buffer:
                _write_coalesced(fd, read_chunk, self.write_buffer)
            else:
                while chunk := read_chunk():
                    _write_all(fd, chunk)
            transfer.dest_mtime_ns = writer.commit_blocking(transfer.mode, transfer.mtime_ns)
        except OSError as exc:
            writer.abort_blocking()
            raise map_os_error(exc, self._path(transfer.path), "write") from None
        except BaseException:
            writer.abort_blocking()
            raise
        if transfer.readback:
            try:
                transfer.readback_digest = hash_path(writer.final, algorithm)
            except OSError as exc:
                raise map_os_error(exc, writer.final, "read back") from None


class _LocalTempWriter(TempWriter):
    """A temporary file beside its final name; usable from a thread or the event loop."""

    def __init__(self, backend: LocalBackend, path: str) -> None:
        self.backend = backend
        # Plain strings, not Path objects: this runs once per file, and Path
        # arithmetic costs more than the syscalls for a small file.
        self.final = f"{backend.root}/{path}" if path else backend.root
        folder, _, name = self.final.rpartition("/")
        self.tmp = f"{folder}/{temp_name(name)}"
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise map_os_error(exc, self.final, "create") from None
        self.offset = 0

    async def write(self, data: bytes | memoryview) -> None:
        try:
            await self.backend._run(_write_all, self.fd, data)
        except OSError as exc:
            raise map_os_error(exc, self.final, "write") from None

    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        result: int = await self.backend._run(self.commit_blocking, mode, mtime_ns)
        return result

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
            raise map_os_error(exc, self.final, "write") from None
        os.close(fd)
        self.fd = -1
        try:
            os.replace(self.tmp, self.final)
        except OSError as exc:
            self.abort_blocking()
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise DestinationError(
                    f"cannot replace '{self.final}': a folder of that name is in the way"
                ) from None
            raise map_os_error(exc, self.final, "rename into place") from None
        return mtime

    async def abort(self) -> None:
        self.abort_blocking()

    def abort_blocking(self) -> None:
        """Close and unlink the temporary file; never raises."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)
