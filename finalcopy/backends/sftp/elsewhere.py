"""Batches sent by a helper process over its own SSH connection (see :mod:`..helpers`).

Over SFTP the client's CPU is asyncssh's Python, one packet at a time, on
the one core of the event loop: a helper process is a second connection
on a second core. It opens its connection at its first batch, with the
command's options (the command connected first, so a host key it was
told to accept is already in ``known_hosts``), in an event loop of its own
that lasts as long as the helper, and sends each batch as the command
would (:meth:`~.upload.Uploader.put_files`: resume, server-side hashes).
A helper that cannot connect (a server that takes one connection per user)
sends nothing, and the command sends the batches itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio.from_thread

from finalcopy.backends.base import Backend, FileTransfer
from finalcopy.backends.helpers import HelperUnavailable
from finalcopy.backends.options import DestinationOptions, SshLocation
from finalcopy.errors import FinalcopyError
from finalcopy.hashing import Algorithm

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

__all__ = ["SendOverOwnConnection"]

_connections: dict[SshLocation, tuple[BlockingPortal, Backend]] = {}
"""In a helper: its event loop and connection, per destination, for its whole life."""
_loops = contextlib.ExitStack()


Opener = Callable[[SshLocation, DestinationOptions], Awaitable[Backend]]


@dataclass(frozen=True)
class SendOverOwnConnection:
    """Sends a batch over this process's own connection to ``location`` (picklable)."""

    opener: Opener
    """Opens the connection (the SFTP backend's module-level opener, pickled by name)."""
    location: SshLocation
    options: DestinationOptions

    @classmethod
    def to(
        cls, opener: Opener, location: SshLocation, options: DestinationOptions
    ) -> SendOverOwnConnection:
        return cls(opener, location, replace(options, helpers=None))

    def __call__(self, transfers: list[FileTransfer], algorithm: Algorithm) -> None:
        portal, backend = self._connected()
        portal.call(backend.put_files, transfers, algorithm)

    def _connected(self) -> tuple[BlockingPortal, Backend]:
        if self.location not in _connections:
            portal = _loops.enter_context(anyio.from_thread.start_blocking_portal())
            try:
                backend = portal.call(self.opener, self.location, self.options)
            except FinalcopyError as exc:  # a server that takes one connection at a time…
                raise HelperUnavailable(f"cannot connect: {exc}") from None
            _connections[self.location] = (portal, backend)
        return _connections[self.location]
