"""The one folder a benchmark writes in, ``DEST/finalcopy-bench-<random>/``, and its removal.

A benchmark is run against storage that holds real work, so it must leave
the destination exactly as it found it:

* DEST must already be a folder, with room for one copy of the workload
  (``free_space``; unknown → a warning, and on we go);
* everything is written below a folder with a fresh random name, made by a
  handle on DEST that writes nothing else (no probe file: it is opened with
  ``metadata="posix"``, which skips the local metadata probe, and it never
  copies); the copies go through a second backend rooted in that folder, so
  even their write probes land inside it;
* that folder is removed at the end, whatever happened (an error, Ctrl-C),
  through the backend's own ``walk`` and ``remove``, which work the same on
  a local disk, an NTFS mount and an SFTP server; DEST's own mtime, which
  making that folder changed, is put back where the file system allows it
  (to the second over SFTP, whose protocol carries whole seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from finalcopy.backends.base import Backend
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.backends.registry import Location, opener_for, parse_destination, scheme_of
from finalcopy.backends.removal import remove_tree
from finalcopy.errors import DestinationError, DestinationUnusable, NoSpaceError

__all__ = ["PREFIX", "BenchFolder", "bench_folder", "check_room", "local_root"]

PREFIX = "finalcopy-bench-"
MiB = 1 << 20


@dataclass
class BenchFolder:
    """``DEST/<name>/`` and a backend rooted in it (:attr:`backend`)."""

    name: str
    backend: Backend
    """Rooted at this folder: each run copies into a fresh child of it."""
    location: Location
    """Where the folder is, as other tools are told (a local path, or a path on the server)."""
    free: int | None
    """DEST's free bytes before anything was written (None: unknown)."""

    @property
    def remote(self) -> SshLocation | None:
        return self.location if isinstance(self.location, SshLocation) else None

    def child(self, sub: str) -> str:
        """The path of ``sub`` (a child of this folder) for a command-line tool."""
        if isinstance(self.location, SshLocation):
            return posixpath.join(self.location.path, sub)
        return str(self.location / sub)


def _child(location: Location, name: str) -> Location:
    if isinstance(location, SshLocation):
        return dataclasses.replace(location, path=posixpath.join(location.path, name))
    return location / name


def check_room(free: int | None, needed: int, where: str) -> str | None:
    """Refuse (:class:`NoSpaceError`) when ``needed`` bytes do not fit; a warning when unknown."""
    if free is None:
        return (
            f"free space on '{where}' is unknown; going on "
            f"(the benchmark needs {needed // MiB} MiB)"
        )
    if free < needed:
        raise NoSpaceError(
            f"not enough space on '{where}' for the benchmark: it needs "
            f"{needed // MiB} MiB (one copy of the workload at a time), {free // MiB} MiB free; "
            "use a smaller --size"
        )
    return None


async def _fresh_name(outer: Backend) -> str:
    while True:
        name = PREFIX + secrets.token_hex(16)  # unguessable: the folder is removed after
        (st,) = await outer.stat([name])
        if st is None:
            return name


@contextlib.asynccontextmanager
async def bench_folder(
    dest: str, options: DestinationOptions, needed: int, warn: Callable[[str], None]
) -> AsyncIterator[BenchFolder]:
    """Check DEST, make ``DEST/finalcopy-bench-<random>/``, yield it, remove it whatever happens."""
    location = parse_destination(dest)
    opener = opener_for(scheme_of(location))
    outer = await opener(location, dataclasses.replace(options, metadata="posix"))
    async with outer:
        (st,) = await outer.stat([""])
        if st is None or st.kind != "dir":
            raise DestinationUnusable(
                f"destination '{outer.root}' is not an existing folder; "
                "finalcopy bench writes only inside a folder that exists"
            )
        free = await outer.free_space("")
        if (warning := check_room(free, needed, outer.root)) is not None:
            warn(warning)
        name = await _fresh_name(outer)
        await outer.makedirs([name])
        try:
            inner = await opener(_child(location, name), options)
            async with inner:
                yield BenchFolder(name, inner, _child(location, name), free)
        finally:
            stopped_by = sys.exc_info()[1]  # Ctrl-C or an error: what the bench must report
            with anyio.CancelScope(shield=True):
                try:
                    await remove_tree(outer, name)
                except DestinationError as exc:
                    message = (
                        f"could not remove '{outer.describe(name)}' ({exc}); remove it by hand"
                    )
                    if stopped_by is not None:
                        warn(message)
                    else:
                        raise DestinationError(message) from None
                # Making and removing a child changed DEST's mtime: put it back (its
                # mode is given back as found). Best effort: a file system may refuse.
                with contextlib.suppress(DestinationError):
                    await outer.set_metadata("", mode=st.mode, mtime_ns=st.mtime_ns)


def local_root(folder: BenchFolder) -> Path | None:
    """The folder as a local path, or None over SFTP."""
    return None if isinstance(folder.location, SshLocation) else folder.location
