"""asyncssh's errors, told apart and translated into :mod:`finalcopy.errors` at the boundary.

Two kinds matter: failures of the link itself (:func:`is_connection_error`:
worth a reconnect and a retry) and the server's refusal of one request
(:func:`map_sftp_error`: reported with the path and the server's reason).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncssh

from finalcopy.errors import (
    ConnectionLostError,
    DestinationError,
    NoSpaceError,
    PermissionDeniedError,
)


def is_connection_error(exc: BaseException) -> bool:
    """True for failures of the link itself (worth a reconnect), not refusals by the server."""
    if isinstance(exc, ConnectionLostError):
        return True
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return True
    if isinstance(exc, asyncssh.SFTPError):
        return False
    return isinstance(
        exc,
        asyncssh.ConnectionLost | asyncssh.ChannelOpenError | BrokenPipeError | TimeoutError,
    ) or (isinstance(exc, OSError) and not isinstance(exc, asyncssh.Error))


def describe_ssh_error(exc: BaseException) -> str:
    """asyncssh's reason without the class name noise."""
    if isinstance(exc, asyncssh.Error) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def map_sftp_error(exc: asyncssh.SFTPError, action: str, where: str) -> DestinationError:
    """Translate the server's refusal of one SFTP request."""
    message = f"cannot {action} '{where}': {describe_ssh_error(exc)}"
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return PermissionDeniedError(message)
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return NoSpaceError(message)
    return DestinationError(message)


async def in_the_way(
    exc: asyncssh.SFTPError, look: Callable[[], Awaitable[asyncssh.SFTPAttrs]]
) -> asyncssh.SFTPAttrs | None:
    """What stands at a name after the server refused to create something there.

    ``look`` stats the name; ``None`` means nothing is there (the refusal had
    another cause). A failure of the link is re-raised as it is: the caller's
    reconnect handles it.
    """
    if is_connection_error(exc):
        raise exc
    try:
        return await look()
    except asyncssh.SFTPNoSuchFile:
        return None


def map_ssh_error(exc: Exception, action: str, where: str) -> Exception:
    """What :meth:`~.connection.Link.call` raises for a failure that is not the link's.

    The server's refusals become :mod:`finalcopy.errors` exceptions; anything
    else (already a finalcopy error, or a bug) is returned as it is.
    """
    if isinstance(exc, asyncssh.SFTPError):
        return map_sftp_error(exc, action, where)
    if isinstance(exc, asyncssh.Error):
        return DestinationError(f"cannot {action} '{where}': {describe_ssh_error(exc)}")
    return exc
