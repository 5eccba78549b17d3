"""The contract every destination keeps.

A backend is where bytes land: a local POSIX disk, an NTFS disk mounted
through FUSE, an SFTP server. The engine drives it through the small async
interface below and never learns which one it has. Paths are always
relative, POSIX-style strings (``"projet/docs/video1.mp4"``); ``""`` is the
backend's root.

The rules a backend must keep (``tests/test_backend_conformance.py`` checks
them on every backend):

* **No partial final names.** File bytes are written under a temporary name
  in the same folder (see :func:`temp_name`), flushed to stable storage, and
  only then renamed over the final name. A reader of the final name sees the
  old file or the complete new one, never a prefix.
* **Errors are mapped.** Only :mod:`finalcopy.errors` exceptions leave a
  backend: ``OSError``, asyncssh errors and timeouts are translated at the
  boundary, with the path and the cause in the message.
* **Capabilities are declared**, not guessed at the call site: whether POSIX
  metadata is kept, which hashes the destination computes itself, whether a
  partial temporary file can be resumed.

Example, the engine's view of one file::

    writer = await backend.open_temp("a/b.bin")
    try:
        await writer.write(b"...")
        await writer.commit(mode=0o644, mtime_ns=mtime)
    except BaseException:
        await writer.abort()
        raise
    digest = await backend.hash_file("a/b.bin", algorithm)

Backends with a faster path for the same work (the local disk does a batch
of small files in one worker thread) override :meth:`Backend.put_files`.
"""

from __future__ import annotations

import hashlib
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from finalcopy.errors import FinalcopyError
from finalcopy.hashing import Algorithm

EntryKind = Literal["file", "dir", "symlink", "other"]

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

    Deterministic so that a re-run after a crash reuses (and so cleans or
    resumes) the same temporary file; fixed-length so that a 255-byte final
    name still has a legal temporary name beside it. ``salt`` picks another
    name of the same shape: the engine uses it when a source file is itself
    named like a sibling's temporary file (see :attr:`FileTransfer.temp`).
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
    if len(parts) == 2 and not parts[0]:
        return parts[1].strip("/")  # the common case: a path under the root
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do; the engine adapts instead of probing."""

    posix_metadata: bool
    """Mode and mtime are kept (False on NTFS/FUSE: never call chmod/utime there)."""
    symlinks: bool = True
    """Symbolic links can be created."""
    remote_hashes: frozenset[str] = frozenset()
    """Algorithms the destination computes itself, without sending the bytes back."""
    resume: bool = False
    """A partial temporary file can be continued after a dropped connection."""
    local_path: bool = False
    """Paths are local files (so ``dest inside source`` can be checked)."""


@dataclass(frozen=True)
class DestStat:
    """What ``stat`` tells about a destination entry (``lstat``: links not followed)."""

    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int


class ChunkSource(Protocol):
    """The bytes of one source file, hashed and counted as they are read.

    Provided by the engine; a backend only moves what it returns. Every method
    blocks, so call them from a worker thread (``anyio.to_thread.run_sync``).
    They raise :class:`~finalcopy.errors.SourceError` on read errors and
    :class:`~finalcopy.errors.Interrupted` once the run is cancelled.
    """

    size: int
    """Size of the source file when planned."""

    def read_chunk(self) -> memoryview:
        """Next chunk (empty at end of file); valid until the next call."""
        ...

    def read_many(self, max_chunks: int) -> list[bytes]:
        """Up to ``max_chunks`` chunks as independent ``bytes``.

        Fewer than ``max_chunks`` (possibly none) means the end of the file was
        reached; later calls return an empty list.
        """
        ...

    def consume_prefix(self, length: int, algorithm: Algorithm) -> str:
        """Read ``length`` bytes into the streaming hash and return their own digest.

        Used to resume: the caller compares this digest with the destination's
        partial file and, if equal, writes from ``length`` on.
        """
        ...

    def rewind(self) -> None:
        """Start over from byte 0 (a resume attempt that did not match)."""
        ...


@dataclass(eq=False)
class FileTransfer:
    """One file for :meth:`Backend.put_files`; the backend fills the outcome fields."""

    path: str
    source: ChunkSource
    mode: int
    mtime_ns: int
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


class TempWriter(ABC):
    """A file being written under its temporary name."""

    offset: int = 0
    """Bytes already in the temporary file (non-zero when resuming)."""

    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; may return before the bytes are durable."""

    @abstractmethod
    async def commit(self, *, mode: int | None, mtime_ns: int | None) -> int:
        """Flush to stable storage, apply metadata where kept, rename into place.

        Returns the destination's mtime (ns) after the rename.
        """

    @abstractmethod
    async def abort(self) -> None:
        """Close and remove the temporary file. Never raises."""


class Backend(ABC):
    """A destination. Use as ``async with backend:``; :meth:`aclose` releases it."""

    capabilities: Capabilities
    root: str
    """Human-readable location of ``""`` (a path or a URL), for messages."""
    strategy: str = ""
    """One line saying which strategy was chosen and why, for the log."""
    on_retry: Callable[[str, int, str], None] | None = None
    """Set by the engine; a backend that retries calls it as ``(path, attempt, error)``."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def describe(self, path: str) -> str:
        """Human-readable form of ``path`` for messages."""
        return f"{self.root.rstrip('/')}/{path}" if path else self.root

    # -- tree -------------------------------------------------------------

    @abstractmethod
    async def prepare(self) -> None:
        """Create the root if needed and prove it writable (write-and-delete probe).

        Raises :class:`~finalcopy.errors.DestinationUnusable` otherwise.
        """

    @abstractmethod
    async def makedirs(self, paths: Sequence[str]) -> None:
        """Create each folder and its parents; existing folders are fine."""

    @abstractmethod
    async def stat(self, paths: Sequence[str]) -> list[DestStat | None]:
        """``lstat`` each path; ``None`` where nothing exists."""

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
    async def symlink(self, path: str, target: str) -> None:
        """Create (or atomically replace) a symbolic link."""

    @abstractmethod
    async def set_metadata(self, path: str, *, mode: int, mtime_ns: int) -> None:
        """Apply mode and mtime to a folder; a no-op without ``posix_metadata``."""

    @abstractmethod
    async def sync_dirs(self, paths: Sequence[str]) -> None:
        """Make the folders' entries (renames, creations) durable where possible."""

    @abstractmethod
    async def free_space(self, path: str = "") -> int | None:
        """Bytes available to us below ``path``; ``None`` when unknown."""

    # -- files ------------------------------------------------------------

    @abstractmethod
    async def open_temp(self, path: str, *, resume: bool = False) -> TempWriter:
        """Open the temporary file for ``path``.

        With ``resume`` and the ``resume`` capability, an existing partial
        temporary file is kept and ``offset`` tells its size; otherwise it is
        truncated.
        """

    @abstractmethod
    async def hash_file(self, path: str, algorithm: Algorithm) -> str:
        """Hash the stored file, bypassing caches where possible (read-back or server-side)."""

    @abstractmethod
    async def read_bytes(self, path: str) -> bytes | None:
        """Whole content of a small file (manifests), ``None`` if missing."""

    @abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> None:
        """Atomically replace a small file with ``data``, durably."""

    def name_problems(self, paths: Sequence[str]) -> list[str]:
        """Paths this destination cannot store, each with the reason (none by default)."""
        return []

    def dest_name(self, path: str) -> str:
        """The path ``path`` is stored under (the same path, unless names are mapped).

        The engine passes every destination path through this after
        :meth:`name_problems` has seen the whole plan, so a backend that maps
        names (NTFS with ``--ntfs-names map``) can settle collisions between
        siblings. The mapping must be injective and keep ``/`` as separator.
        """
        return path

    async def put_files(self, transfers: Sequence[FileTransfer], algorithm: Algorithm) -> None:
        """Copy each transfer's source to its path and fill in its outcome.

        One transfer's failure is stored in its ``error`` and does not stop the
        others; only :class:`~finalcopy.errors.Interrupted` propagates, after
        every temporary file has been removed.
        """
        from finalcopy.errors import Interrupted

        for transfer in transfers:
            try:
                await self.put_file(transfer, algorithm)
            except Interrupted:
                raise
            except FinalcopyError as exc:
                transfer.error = exc

    async def put_file(self, transfer: FileTransfer, algorithm: Algorithm) -> None:
        """Stream one file through :meth:`open_temp`; raise on failure."""
        import anyio

        source = transfer.source
        writer = await self.open_temp(transfer.path)
        try:
            while True:
                chunks = await anyio.to_thread.run_sync(source.read_many, 16)
                for chunk in chunks:
                    await writer.write(chunk)
                if len(chunks) < 16:
                    break
            transfer.dest_mtime_ns = await writer.commit(
                mode=transfer.mode, mtime_ns=transfer.mtime_ns
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        if transfer.readback:
            transfer.readback_digest = await self.hash_file(transfer.path, algorithm)
