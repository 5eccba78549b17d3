"""One batch of files sent to a local folder tree: streamed, made durable, published, read back.

Runs in one worker thread per batch (see :meth:`LocalBackend.put_files`).
Each file is written to its temporary name, made durable, renamed over its
final name and, when asked, hashed back from the destination. Durability
is one ``fsync`` per file, or, where :mod:`.durability` allows it, one
``syncfs`` for the files of a batch that share a folder; there, a large
file's write-back is also started as it is written, so that its ``fsync``
has little left to wait for. Per-file failures
are stored on their :class:`~finalcopy.backends.base.FileTransfer`; only an
interruption leaves the batch, after removing every temporary file it made.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from finalcopy.backends.base import FileTransfer
from finalcopy.backends.local.durability import syncfs
from finalcopy.backends.local.folders import Folders, open_regular_fd
from finalcopy.backends.local.writer import LocalTempWriter, write_blocks, write_blocks_early
from finalcopy.errors import FinalcopyError, os_errors
from finalcopy.hashing import Algorithm, hash_fd

__all__ = ["WRITEBACK_STEP", "BatchSend", "hash_at"]

#: Bytes of a file written between two hints to start their write-back (see
#: :func:`.durability.start_writeback`). Copying a 1 GiB tree of videos to ext4
#: on a disk (a loop device in direct I/O), hints took 10 to 20 % off the copy,
#: verified or not, and steps of 4 to 32 MiB were within noise of each other.
#: But ext4 allocates a file's blocks at write-back, so every hint is an
#: allocation interleaved with the other files in flight: with 8 MiB steps a
#: 100 MiB video ended up in 11 to 15 extents, with 32 MiB steps in 4 to 6,
#: about as many as with no hint (1 to 6).
WRITEBACK_STEP = 32 << 20


def hash_at(dir_fd: int, name: str, algorithm: Algorithm, drop: bool) -> str:
    """Hash file ``name`` of folder ``dir_fd``, never through a link (``drop``: from the device)."""
    fd, size = open_regular_fd(dir_fd, name)
    try:
        return hash_fd(fd, size, algorithm, drop=drop)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class BatchSend:
    """How one batch is sent: where, in what blocks, how made durable and read back."""

    folders: Folders
    """The batch's folder descriptors; a writer's folder stays open until it is published."""
    new_writer: Callable[[FileTransfer], LocalTempWriter]
    """Opens the temporary file of a transfer in :attr:`folders`."""
    algorithm: Algorithm
    block: int
    """Bytes per read, hash update and write."""
    drop_cache: bool
    """Read back from the device, not the page cache."""
    sync_device: int | None
    """The device whose files one ``syncfs`` makes durable (see :mod:`.durability`), or
    None: an ``fsync`` per file. A folder on another file system below (a mount) keeps
    its ``fsync``s: that file system's ``syncfs`` may do nothing (FUSE)."""

    def run(self, transfers: list[FileTransfer]) -> None:
        if self.sync_device is None:
            for transfer in transfers:
                self._one(transfer)
            return
        for folder, grouped in itertools.groupby(
            transfers, key=lambda t: t.path.rpartition("/")[0]
        ):
            group = list(grouped)
            # One fsync flushes one file; syncfs would flush the whole file system.
            if len(group) > 1 and self._on_sync_device(folder):
                self._group(group)
            else:
                for transfer in group:
                    self._one(transfer)

    def _on_sync_device(self, folder: str) -> bool:
        """Whether ``folder`` is on :attr:`sync_device` (False if it cannot be opened)."""
        try:
            return os.fstat(self.folders.get(folder)).st_dev == self.sync_device
        except (OSError, FinalcopyError):
            return False  # each file's own writer reports why

    def _one(self, transfer: FileTransfer) -> None:
        """Write, fsync, rename, read back: one file made durable on its own."""
        try:
            writer = self._stream(transfer)
            start = time.perf_counter()
            try:
                transfer.dest_mtime_ns = writer.commit_blocking(transfer.mode, transfer.mtime_ns)
            finally:
                transfer.times.commit += time.perf_counter() - start
            self._read_back(transfer, writer)
        except FinalcopyError as exc:
            transfer.error = exc

    def _group(self, transfers: list[FileTransfer]) -> None:
        """Files of one folder: all written, made durable by one ``syncfs``, then published.

        A failed ``syncfs`` fails every file of the group: none is published.
        """
        sealed: list[tuple[FileTransfer, LocalTempWriter]] = []
        try:
            for transfer in transfers:
                writer = self._sealed(transfer)
                if writer is not None:
                    sealed.append((transfer, writer))
            if not sealed:
                return
            failure = _sync(sealed)
            if failure is not None:
                for transfer, _ in sealed:
                    transfer.error = failure
                return
            while sealed:
                transfer, writer = sealed.pop(0)
                try:
                    writer.publish_blocking()
                    self._read_back(transfer, writer)
                except FinalcopyError as exc:
                    transfer.error = exc
        finally:
            for _, writer in sealed:  # never published: a failed sync, or an interruption
                writer.abort_blocking()

    def _sealed(self, transfer: FileTransfer) -> LocalTempWriter | None:
        """The transfer's temporary file written and closed, not yet durable; None on failure."""
        try:
            writer = self._stream(transfer)
            start = time.perf_counter()
            try:
                mtime = writer.seal_blocking(transfer.mode, transfer.mtime_ns, sync=False)
            finally:
                transfer.times.commit += time.perf_counter() - start
        except FinalcopyError as exc:
            transfer.error = exc
            return None
        transfer.dest_mtime_ns = mtime
        return writer

    def _stream(self, transfer: FileTransfer) -> LocalTempWriter:
        """A temporary file holding the source's bytes, not yet durable."""
        # Timed by hand: three context managers per file are a visible share of a small file.
        start = time.perf_counter()
        try:
            writer = self.new_writer(transfer)
            writer.fill(self._filler(transfer))
        finally:
            transfer.times.stream += time.perf_counter() - start
        return writer

    def _filler(self, transfer: FileTransfer) -> Callable[[int], None]:
        """What writes the transfer's bytes to its temporary file's descriptor.

        Where a file system was chosen for ``syncfs`` (ext4, xfs, btrfs: a
        device under a page cache), a large file's write-back is started as
        it is written (:func:`.writer.write_blocks_early`); elsewhere the
        choice of ``syncfs`` is what tells a device's page cache from the
        rest. There is nothing to start on tmpfs (no device) nor on ntfs-3g
        and exfat-fuse (FUSE writes through: ``sync_file_range`` returns at
        once there), so a folder of such a file system mounted below the
        destination costs one cheap call per step at worst.
        """
        read_block = transfer.source.read_block
        if self.sync_device is None:
            return partial(write_blocks, read_block=read_block, size=self.block)
        return partial(
            write_blocks_early, read_block=read_block, size=self.block, step=WRITEBACK_STEP
        )

    def _read_back(self, transfer: FileTransfer, writer: LocalTempWriter) -> None:
        """Hash the published file from the destination, when the transfer asks for it.

        A failure leaves ``readback_digest`` None, as :meth:`Backend.put_files` says:
        the file is committed, and the engine hashes it again and reports the error.
        """
        if not transfer.readback:
            return
        start = time.perf_counter()
        try:
            transfer.readback_digest = hash_at(
                writer.dir_fd, writer.name, self.algorithm, self.drop_cache
            )
        except OSError:
            pass
        finally:
            transfer.times.verify += time.perf_counter() - start


def _sync(sealed: list[tuple[FileTransfer, LocalTempWriter]]) -> FinalcopyError | None:
    """``syncfs`` for the sealed files, its time shared among them; why it failed, or None."""
    writer = sealed[0][1]
    folder = writer.where.rpartition("/")[0] or writer.where  # the error is the folder's
    start = time.perf_counter()
    try:
        with os_errors(folder, "sync the new files of"):
            syncfs(writer.dir_fd)
    except FinalcopyError as exc:
        return exc
    finally:
        share = (time.perf_counter() - start) / len(sealed)
        for transfer, _ in sealed:
            transfer.times.commit += share
    return None
