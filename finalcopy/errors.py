"""The one exception tree of finalcopy.

Backends translate ``OSError``, asyncssh errors and timeouts at their
boundary, so the engine, the pipeline and the CLI handle only these and can
always print one clear line naming the path and the cause::

    FinalcopyError
     ├── UsageError                   bad arguments (exit 2)
     ├── SourceError                  a source file cannot be read
     ├── DestinationError             the destination refused an operation
     │    ├── DestinationUnusable     not reachable / not writable at all (exit 3)
     │    ├── NoSpaceError            ENOSPC, quota
     │    ├── PermissionDeniedError   EACCES / EPERM
     │    ├── HostKeyError            unknown or changed SSH host key
     │    └── ConnectionLostError     network dropped; retryable
     ├── UnsafeNameError              names the destination cannot hold (NTFS)
     ├── VerificationError            the copy does not match the source
     └── Interrupted                  Ctrl-C / SIGTERM (exit 130)
"""

from __future__ import annotations

import errno
import os


class FinalcopyError(Exception):
    """Base of every error finalcopy reports to its user."""


class UsageError(FinalcopyError):
    """The command line or the settings are wrong."""


class SourceError(FinalcopyError):
    """A source file or folder could not be read."""


class DestinationError(FinalcopyError):
    """The destination refused an operation."""


class DestinationUnusable(DestinationError):
    """The destination cannot be used at all: missing, read-only, unreachable."""


class NoSpaceError(DestinationError):
    """The destination ran out of space or quota."""


class PermissionDeniedError(DestinationError):
    """The destination denied access to a path."""


class HostKeyError(DestinationError):
    """The SSH server's host key is unknown or has changed."""


class ConnectionLostError(DestinationError):
    """The connection to a remote destination dropped; the operation may be retried."""


class UnsafeNameError(FinalcopyError):
    """Some source names cannot be stored on the destination file system."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"{len(problems)} name(s) cannot be stored on this destination:\n{listing}"
        )


class VerificationError(FinalcopyError):
    """A copied file does not match the hash taken while streaming it."""


class Interrupted(FinalcopyError):
    """The run was interrupted by a signal."""


def describe_os_error(exc: OSError) -> str:
    """Return ``strerror`` without Python's ``[Errno n]`` noise."""
    return exc.strerror or str(exc)


def map_os_error(exc: OSError, path: object, action: str) -> DestinationError:
    """Translate an ``OSError`` raised by a destination operation."""
    message = f"cannot {action} '{path}': {describe_os_error(exc)}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(message)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDeniedError(message)
    return DestinationError(message)


class os_errors:  # a class, not @contextmanager: it wraps every file operation of a batch
    """Let no ``OSError`` out: raise :func:`map_os_error`'s error for ``action`` on ``path``.

    ``ELOOP`` is what an open with ``O_NOFOLLOW`` says when it meets a
    symbolic link, so it is named as such::

        with os_errors(where, "read back"):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    """

    __slots__ = ("action", "path")

    def __init__(self, path: object, action: str) -> None:
        self.path = path
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, OSError):
            if exc.errno == errno.ELOOP:
                raise DestinationError(
                    f"'{self.path}' is a symbolic link; refusing to follow it"
                ) from None
            raise map_os_error(exc, self.path, self.action) from None


def source_error(exc: OSError, path: os.PathLike[str] | str) -> SourceError:
    """Translate an ``OSError`` raised while reading a source path."""
    return SourceError(f"cannot read '{os.fspath(path)}': {describe_os_error(exc)}")


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: its first finalcopy error, else the group.

    Task groups wrap what their tasks raise; the CLI must still print one clear
    line, not an exception-group traceback.
    """
    pending: list[BaseException] = [group]
    leaves: list[BaseException] = []
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif isinstance(exc, FinalcopyError):
            return exc
        else:
            leaves.append(exc)
    return leaves[0] if len({type(leaf) for leaf in leaves}) == 1 else group
