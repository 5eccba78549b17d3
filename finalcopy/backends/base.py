"""The contract every destination keeps.

A backend is where bytes land: a local POSIX disk, a file system without
POSIX metadata (NTFS through FUSE, FAT, exFAT), an SFTP server. The engine
drives it through the small async interface below and never learns which
one it has. Paths are relative POSIX strings (``"projet/docs/a.mp4"``);
``""`` is the backend's root.

The engine sends the files of a copy one batch at a time::

    await backend.put_files(transfers, algorithm, on_retry=report_retry)

and :meth:`Backend.put_files`, unless a backend overrides it for speed, is
this loop over the one write primitive, :meth:`Backend.open_temp`::

    for transfer in transfers:
        writer = await backend.open_temp(transfer.path, transfer.temp)
        try:
            while chunks := read(transfer.source):
                await writer.write(chunks)
            transfer.dest_mtime_ns = await writer.commit(
                mode=transfer.mode, mtime_ns=transfer.mtime_ns
            )
        except FinalcopyError as exc:
            await writer.abort()
            transfer.error = exc  # this file failed; the batch goes on
        if transfer.readback:
            transfer.readback_digest = await backend.hash_file(transfer.path, algorithm)

The local backend runs a batch in one worker thread, the SFTP backend
pipelines it: same rules, fewer round trips. Small files (manifest, state,
locks: :meth:`~Backend.write_bytes`) are a batch of one.

The rules (``tests/test_backend_conformance.py`` proves each on every backend):

* **Commit is atomic.** To *commit* is to make the complete file visible at
  its final name at once: a reader sees the old file or the new one, never
  a prefix. A file system writes under a temporary name beside the final
  one (:attr:`FileTransfer.temp`), flushes it and renames it over the final
  name; an object store, which has no rename, completes a multipart upload.
* **No partial final names.** A file that fails or is interrupted leaves
  nothing at its final name and no temporary file (:meth:`TempWriter.abort`).
* **Errors are mapped.** Only :mod:`finalcopy.errors` exceptions leave a
  backend; ``OSError``, asyncssh errors and timeouts are translated at the
  boundary, naming the path and the cause.
* **Links are never followed** below the root (the root itself may be one):
  a link where a folder is expected is an error naming it; a link at a
  file's name is replaced or removed itself.
* **Metadata where declared**: applied with ``capabilities.posix_metadata``,
  never touched without it (no chmod, no utime).
* **Any name the destination can hold** (spaces, unicode, a leading dash, a
  line feed) is stored as given, or as :meth:`Backend.dest_name` maps it.
* **Commit returns the mtime** ``stat`` reports afterwards.
* **One file's failure is its own**: :meth:`Backend.put_files` records it in
  that transfer and goes on with the others.

A new backend is a folder beside ``local/`` and ``sftp/`` implementing the
eight abstract methods of :class:`Backend` and a :class:`TempWriter`, and one
line in :data:`finalcopy.backends.registry.BACKENDS`. Optional capabilities
(:class:`Capabilities`) have defaults that do nothing or refuse.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.to_thread

from finalcopy.backends.fanout import each_tried
from finalcopy.backends.phases import PhaseTimes
from finalcopy.backends.source import BytesSource, ChunkSource
from finalcopy.errors import DestinationError, DestinationUnusable, FinalcopyError
from finalcopy.hashing import DEFAULT_ALGORITHM, Algorithm, get_algorithm

EntryKind = Literal["file", "dir", "symlink", "other"]

RetryListener = Callable[[str, int, str], None]
OnRetry = RetryListener | None
"""Told ``(path, attempt, error)`` before an operation that failed is tried again."""

#: Prefix and suffix of temporary files; ``finalcopy verify`` reports leftovers.
TEMP_PREFIX = ".fc-"
TEMP_SUFFIX = ".part"


def entry_kind(mode: int) -> EntryKind:
    """The kind of entry an ``st_mode`` describes."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def temp_name(final_name: str, salt: int = 0) -> str:
    """Temporary name for ``final_name``, fixed-length and deterministic.

    Deterministic so that a re-run after a crash reuses (so cleans or resumes)
    the same temporary file; fixed-length so that a 255-byte final name has a
    legal temporary name beside it. ``salt`` picks another name of the same
    shape, for a source file named like a sibling's temporary file.
    """
    key = final_name if not salt else f"{final_name}\0{salt}"
    digest = hashlib.blake2s(key.encode("utf-8", "surrogateescape"), digest_size=8)
    return f"{TEMP_PREFIX}{digest.hexdigest()}{TEMP_SUFFIX}"


def fresh_temp_name(final_name: str) -> str:
    """A temporary name of :func:`temp_name`'s shape that no plan can predict or hold.

    For what is never resumed (a symbolic link being created): a planned file
    named like a deterministic temporary name cannot be taken for a leftover.
    """
    return temp_name(final_name, salt=secrets.randbits(63) + 1)


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_name`."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and len(name) == 25


def join(*parts: str) -> str:
    """Join relative POSIX paths, ignoring empty parts."""
    if len(parts) == 2 and (tail := parts[1].strip("/")):  # once or more per file: no generator
        return f"{head}/{tail}" if (head := parts[0].strip("/")) else tail
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


#: Chunks read from a source per worker-thread hop (1 MiB at the default chunk size).
READ_CHUNKS = 16
#: Mode (less the umask) of a file committed with ``mode=None``: it is never chmod-ed.
NEW_FILE_MODE = 0o644


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do; the engine adapts instead of probing."""

    posix_metadata: bool
    """Mode and mtime are kept (False on NTFS/FUSE: chmod/utime are never called there)."""
    symlinks: bool = False
    """Symbolic links can be created (:meth:`Backend.symlink`)."""
    local_path: bool = False
    """Paths are local files (so ``dest inside source`` can be checked)."""


@dataclass(frozen=True)
class DestStat:
    """What ``stat`` tells about a destination entry (``lstat``: links not followed)."""

    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int


@dataclass(eq=False)
class FileTransfer:
    """One file for :meth:`Backend.put_files`; the backend fills the outcome fields."""

    path: str
    source: ChunkSource
    mode: int | None
    """Mode to apply at commit where modes are kept; ``None``: never chmod (see NEW_FILE_MODE)."""
    mtime_ns: int | None
    """Mtime to apply at commit where mtimes are kept; ``None``: the time of the commit."""
    temp: str = ""
    """Temporary path (same folder as ``path``) chosen by the engine so that it never
    equals a file of the plan; empty means ``temp_name`` of the final name."""
    readback: bool = False
    """Re-hash the committed file from the destination and store it in ``readback_digest``."""
    error: FinalcopyError | None = None
    readback_digest: str | None = None
    resumed_from: int = 0
    """Bytes of a previous partial file that were proven equal and kept."""
    dest_mtime_ns: int = 0
    """The destination's mtime right after commit, to detect later changes cheaply."""
    attempts: int = field(default=1)
    times: PhaseTimes = field(default_factory=PhaseTimes)
    """Where this file's time went; the backend adds to it."""

    @property
    def create_mode(self) -> int:
        """Creation mode (less the umask): private until commit applies ``mode``, unless none is."""
        return NEW_FILE_MODE if self.mode is None else 0o600


Batch = Sequence[FileTransfer]  # the files of one Backend.put_files call


class TempWriter(ABC):
    """A file being written where no reader of its final name can see it yet."""

    offset: int = 0
    """Bytes written so far."""

    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; may return before the bytes are durable."""

    @abstractmethod
    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        """Make the complete file visible at its final name, atomically and durably.

        Applies ``mode`` and ``mtime_ns`` first where metadata is kept (never
        otherwise). Returns the destination's mtime (ns) of the committed file,
        the value ``stat`` reports for it afterwards. On failure the writer is
        aborted: nothing is left at the final name or the temporary one.
        """

    @abstractmethod
    async def abort(self) -> None:
        """Discard what was written (close and remove the temporary file). Never raises."""


class Backend(ABC):
    """A destination: eight primitives, the rest built on them. Use as ``async with backend:``."""

    capabilities: Capabilities
    root: str
    """Human-readable location of ``""`` (a path or a URL), for messages."""
    strategy: str = ""
    """One line saying which strategy was chosen and why, for the log."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def describe(self, path: str) -> str:
        """Human-readable form of ``path`` for messages."""
        return f"{self.root.rstrip('/')}/{path}" if path else self.root

    # -- primitives ----------------------------------------------------------

    @abstractmethod
    async def makedirs(self, paths: Sequence[str]) -> None:
        """Create each folder and its parents (``""``: the root); existing folders are fine."""

    @abstractmethod
    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        """``lstat`` each path; ``None`` where nothing exists (or only beyond a link)."""

    @abstractmethod
    async def walk(self, path: str = "") -> list[tuple[str, DestStat]]:
        """Every entry below ``path`` (not following links), paths relative to the root."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Remove a file, a symlink or an empty folder. Missing is fine."""

    @abstractmethod
    async def rename(self, path: str, new_path: str) -> None:
        """Rename a file or folder; fails if ``new_path`` exists (nothing is merged or lost)."""

    @abstractmethod
    async def open_temp(self, path: str, temp: str = "") -> TempWriter:
        """Start writing the file ``path``, invisible at that name until committed.

        ``temp`` is the temporary path the engine chose (see
        :attr:`FileTransfer.temp`); a backend without rename may ignore it.
        Whatever already lies at the temporary name is never written through.
        """

    @abstractmethod
    async def read_bytes(self, path: str) -> bytes | None:
        """Whole content of a small file (manifest, state, lock), ``None`` if missing."""

    @abstractmethod
    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        """Hash the stored file, bypassing caches where possible (read-back or server-side)."""

    # -- optional capabilities -------------------------------------------------

    async def symlink(self, path: str, target: str) -> None:
        """Create (or atomically replace) a symbolic link; with ``capabilities.symlinks`` only."""
        raise DestinationError(
            f"cannot create symlink '{self.describe(path)}': the destination has no symbolic links"
        )

    async def read_link(self, path: str) -> str | None:
        """Where the link ``path`` points; None if it is none, or the destination cannot say."""
        return None

    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:  # noqa: B027
        """Apply mode and mtime to a folder; a no-op without ``capabilities.posix_metadata``."""

    async def seal_folders(self, folders: Sequence[tuple[str, int, int]]) -> None:
        """:meth:`set_metadata` of each ``(path, mode, mtime_ns)``, several in flight (a round
        trip each over SFTP); every one is tried, the first error raised after."""
        await each_tried(folders, lambda f: self.set_metadata(f[0], mode=f[1], mtime_ns=f[2]))

    async def sync_dirs(self, paths: Sequence[str]) -> None:  # noqa: B027 - nothing to do
        """Make the folders' entries (renames, creations) durable where that is a separate step."""

    async def free_space(self, path: str = "") -> int | None:
        """Bytes available to us below ``path``; ``None`` when unknown (the default)."""
        return None

    # -- conveniences built on the primitives ---------------------------------

    async def prepare(self) -> None:
        """Create the root if needed and prove it writable, else :class:`DestinationUnusable`."""
        # Unpredictable: a fixed name would replace, then remove, a copied file bearing it.
        # Aborted, never synced: a kill -9 leaves it (a leftover to `verify`) only between
        # two system calls, not during an fsync that a busy disk makes long.
        try:
            await self.makedirs([""])
            writer = await self.open_temp(fresh_temp_name("finalcopy-write-probe"))
            try:
                await writer.write(b"finalcopy write probe")
            finally:
                await writer.abort()
        except DestinationUnusable:
            raise
        except DestinationError as exc:
            raise DestinationUnusable(f"destination '{self.root}' is not writable: {exc}") from None

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Atomically and durably replace the small file ``path`` (its folder made first)."""
        if folder := posixpath.dirname(path):
            await self.makedirs([folder])
        transfer = FileTransfer(path, BytesSource(data), mode=None, mtime_ns=None)
        await self.put_files([transfer], get_algorithm(DEFAULT_ALGORITHM))
        if transfer.error is not None:
            raise transfer.error

    async def put_files(
        self, transfers: Batch, algorithm: Algorithm, *, on_retry: OnRetry = None
    ) -> None:
        """Copy each transfer's source to its path, committed, and fill in its outcome.

        One transfer's failure is stored in its ``error`` and does not stop
        the others; only :class:`~finalcopy.errors.Interrupted` (and
        cancellation) propagates, after every temporary file has been
        removed. With ``readback``, the committed file is hashed back into
        ``readback_digest``; left ``None`` when that fails (the engine then
        asks :meth:`hash_file` itself and reports the error). A backend that
        retries (after a dropped connection) tells ``on_retry`` first.
        """
        for transfer in transfers:
            try:
                await self._stream(transfer)
            except FinalcopyError as exc:
                transfer.error = exc
                continue
            if transfer.readback:
                with contextlib.suppress(DestinationError), transfer.times.timing("verify"):
                    transfer.readback_digest = await self.hash_file(transfer.path, algorithm)

    async def _stream(self, transfer: FileTransfer) -> None:
        """:meth:`put_files`' road for one file: open_temp → write → commit, else abort."""
        source = transfer.source
        writer = await self.open_temp(transfer.path, transfer.temp)
        try:
            with transfer.times.timing("stream"):
                while True:
                    chunks = await anyio.to_thread.run_sync(source.read_many, READ_CHUNKS)
                    for chunk in chunks:
                        await writer.write(chunk)
                    if len(chunks) < READ_CHUNKS:
                        break
            with transfer.times.timing("commit"):
                transfer.dest_mtime_ns = await writer.commit(
                    mode=transfer.mode, mtime_ns=transfer.mtime_ns
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise

    # -- names -----------------------------------------------------------------

    def name_problems(self, paths: Sequence[str]) -> list[str]:
        """Paths this destination cannot store, each with the reason (none by default)."""
        return []

    def dest_name(self, path: str) -> str:
        """The path ``path`` is stored under (the same path, unless names are mapped).

        Every destination path goes through this after :meth:`name_problems` saw the
        whole plan, so a backend that maps names (NTFS, ``--ntfs-names map``) can
        settle collisions between siblings; the mapping is injective and keeps ``/``.
        """
        return path
