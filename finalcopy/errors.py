"""The one exception tree of finalcopy, and the exit code each error ends a command with.

Backends translate ``OSError``, asyncssh errors and timeouts at their
boundary, so the engine, the pipeline and the CLI handle only these and can
always print one clear line naming the path and the cause::

    Exception
     ├── FinalcopyError                  something failed (exit 1 unless said)
     │    ├── UsageError                 bad arguments or settings (exit 2)
     │    ├── SourceError                a source file cannot be read (exit 2)
     │    ├── DestinationError           the destination refused an operation
     │    │    ├── DestinationUnusable   not reachable / not writable at all (exit 3)
     │    │    ├── NoSpaceError          ENOSPC, quota (exit 3)
     │    │    ├── PermissionDeniedError EACCES / EPERM / EROFS
     │    │    ├── HostKeyError          unknown or changed SSH host key (exit 3)
     │    │    ├── ConnectionLostError   network dropped; retryable
     │    │    ├── DestinationLocked     another run holds the destination folder's lock
     │    │    └── LockLost              another run broke this run's lock
     │    ├── UnsafeNameError            names the destination cannot hold (NTFS)
     │    ├── VerificationError          the copy does not match the source
     │    ├── ProjectFailure             a project cannot be finalized; its source is kept
     │    ├── UnsafeDeletion             a removal would leave WORK_DIR or reach ARCHIVES_DIR
     │    └── UnsafeMetadata             WORK/.finalcopy/ holds a link or a stranger's entry
     └── Interrupted                     Ctrl-C / SIGTERM (exit 130)

``Interrupted`` stands outside :class:`FinalcopyError` as ``KeyboardInterrupt``
stands outside ``Exception``: the many ``except FinalcopyError`` that record
one failure and go on (a file, a project) never swallow an interruption,
which travels up to whoever stops cleanly.

Each class carries its :attr:`~FinalcopyError.exit_code`; the codes are the
``EXIT_*`` constants below, shared by the CLI and the pipeline's report.
"""

from __future__ import annotations

import errno
import os
from typing import ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
"""Some files or projects failed, or a copy differs from its manifest."""
EXIT_USAGE = 2
EXIT_DESTINATION = 3
"""No usable destination: nothing was touched."""
EXIT_INTERRUPTED = 130


class FinalcopyError(Exception):
    """Base of every error finalcopy reports to its user."""

    exit_code: ClassVar[int] = EXIT_FAILED
    """The exit code of a command this error ends."""


class UsageError(FinalcopyError):
    """The command line or the settings are wrong."""

    exit_code = EXIT_USAGE


class SourceError(FinalcopyError):
    """A source file or folder could not be read."""

    exit_code = EXIT_USAGE


class DestinationError(FinalcopyError):
    """The destination refused an operation."""


class DestinationUnusable(DestinationError):
    """The destination cannot be used at all: missing, read-only, unreachable."""

    exit_code = EXIT_DESTINATION


class NoSpaceError(DestinationError):
    """The destination ran out of space or quota."""

    exit_code = EXIT_DESTINATION


class PermissionDeniedError(DestinationError):
    """The destination denied access to a path."""


class HostKeyError(DestinationError):
    """The SSH server's host key is unknown or has changed."""

    exit_code = EXIT_DESTINATION


class ConnectionLostError(DestinationError):
    """The connection to a remote destination dropped; the operation may be retried."""


class DestinationLocked(DestinationError):
    """Another run holds the destination folder's lock; nothing was written."""


class LockLost(DestinationError):
    """This run's lock was broken by another run; no destructive step was taken."""


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


class ProjectFailure(FinalcopyError):
    """A project cannot be finalized; its source is kept and the run goes on.

    Not ready at the destination, no room, a copy failed, part of the source changed...
    """


class UnsafeDeletion(FinalcopyError):
    """A removal would reach ARCHIVES_DIR or leave the work directory; nothing was removed."""


class UnsafeMetadata(FinalcopyError):
    """A path in ``WORK/.finalcopy/`` is a symbolic link or not what finalcopy made there."""


class Interrupted(Exception):
    """The run was interrupted by a signal (outside :class:`FinalcopyError`, see above)."""

    exit_code: ClassVar[int] = EXIT_INTERRUPTED


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


def link_refused(where: object) -> DestinationError:
    """The error for a symbolic link met where a real folder or file must be."""
    return DestinationError(f"'{where}' is a symbolic link; refusing to follow it")


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
                raise link_refused(self.path) from None
            raise map_os_error(exc, self.path, self.action) from None


def source_error(exc: OSError, path: os.PathLike[str] | str) -> SourceError:
    """Translate an ``OSError`` raised while reading a source path."""
    return SourceError(f"cannot read '{os.fspath(path)}': {describe_os_error(exc)}")


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error to report from a task group, else the group itself.

    That is its first finalcopy error or interruption: task groups wrap what
    their tasks raise, and the CLI must still print one clear line, not an
    exception-group traceback.
    """
    pending: list[BaseException] = [group]
    leaves: list[BaseException] = []
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif isinstance(exc, FinalcopyError | Interrupted):
            return exc
        else:
            leaves.append(exc)
    return leaves[0] if len({type(leaf) for leaf in leaves}) == 1 else group
